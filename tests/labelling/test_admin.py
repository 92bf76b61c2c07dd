"""Labelling tasks in the console: made from a detection run's page, refused on the form with the service's reason,
downloaded, and reported on; hidden tasks and runs stay hidden."""

from __future__ import annotations

import html
import io
import zipfile

import pytest

from labelling.building import build_labelling_task
from labelling.models import LabellingTask
from tests.detection.test_to_dataset import reviewed_run
from training.models import TrainingRun

pytestmark = pytest.mark.django_db
NEW = "/admin/labelling/labellingtask/new/"
FORM = {
    "rule": "all",
    "count": 5,
    "band_low": 0.3,
    "band_high": 0.7,
    "weak_classes": 1,
    "min_distance_m": 0,
    "score_threshold": 0.3,
    "tile_size": 320,
    "image_url": "/data/local-files/?d=images/",
}


def test_a_task_is_made_from_a_runs_page_downloaded_and_reported_on(world, tmp_path):
    run, _rows = reviewed_run(world, tmp_path)
    client = world.staff_client("publisher")
    page = client.get(f"/admin/detection/detectionrun/{run.pk}/change/").content.decode()
    assert f"{NEW}?detection_run={run.pk}" in page
    form = client.get(NEW, {"detection_run": run.pk}).content.decode()
    assert f'<option value="{run.pk}" selected>' in form
    response = client.post(NEW, {**FORM, "detection_run": run.pk})
    task = LabellingTask.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/admin/labelling/labellingtask/{task.pk}/change/"
    assert task.parameters["tile_size"] == 320 and task.created_by == world.users["publisher"]
    build_labelling_task(task.pk)
    page = client.get(f"/admin/labelling/labellingtask/{task.pk}/change/").content.decode()
    assert "CVAT task (COCO 1.0)" in page and "Label Studio tasks" in page and "Nothing reported yet" in page
    archive = client.get(f"/admin/labelling/labellingtask/{task.pk}/download/cvat_xml/")
    with zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))) as zf:
        assert "annotations.xml" in zf.namelist()
    # What came back: a dataset holding none of the task's pictures is refused on the page.
    refused = client.post(f"/admin/labelling/labellingtask/{task.pk}/acceptance/", {"dataset": world.dataset.pk})
    assert "holds none of the task" in refused.content.decode()
    listing = client.get("/admin/labelling/labellingtask/").content.decode()
    assert "new-labelling-task" in listing and html.escape(task.model_version) in listing


def test_refusals_show_on_the_form_and_hidden_things_stay_hidden(world, tmp_path):
    run, _rows = reviewed_run(world, tmp_path)
    client = world.staff_client("publisher")
    TrainingRun.objects.filter(pk=run.pk).update(status="failed")
    page = client.post(NEW, {**FORM, "detection_run": run.pk}).content.decode()
    assert "Select a valid choice" in page  # only finished runs are offered
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    page = client.post(NEW, {**FORM, "detection_run": run.pk, "band_low": 0.9}).content.decode()
    assert "Invalid band." in page
    page = client.post(NEW, {**FORM, "detection_run": run.pk, "dataset": world.dataset.pk}).content.decode()
    assert "Give a detection run or a dataset, not both." in page
    assert not LabellingTask.objects.exists()
    assert world.staff_client("viewer").get(NEW).status_code == 403
    other = world.staff_client("other_trainer")
    assert "Select a valid choice" in other.post(NEW, {**FORM, "detection_run": run.pk}).content.decode()
    client.post(NEW, {**FORM, "detection_run": run.pk})
    task = LabellingTask.objects.get()
    for url in (
        f"/admin/labelling/labellingtask/{task.pk}/change/",
        f"/admin/labelling/labellingtask/{task.pk}/acceptance/",
    ):
        assert other.get(url).status_code in (302, 404)
    assert html.escape(task.model_version) not in other.get("/admin/labelling/labellingtask/").content.decode()
