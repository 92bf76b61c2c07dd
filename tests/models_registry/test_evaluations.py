"""Evaluations: the admin's results pages and gallery, the API's gallery, evaluation runs' rules, retry and the
command line. The per-class numbers themselves are checked against pycocotools in tests/engine/test_analysis.py."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.errors import ApplicationError
from models_registry.evaluations import gallery_render_name
from training.models import TrainingRun
from training.services import training_run_resume, training_run_retry
from training.services.evaluation_runs import evaluation_run_create

pytestmark = pytest.mark.django_db


def test_evaluation_page_shows_sorted_per_class_table_pr_charts_and_confusion(world):
    client = world.staff_client("owner")
    url = f"/admin/models_registry/evaluation/{world.evaluation.pk}/change/"
    page = client.get(url + "?sort=-ap50").content.decode()
    assert 'id="per-class-table"' in page and 'id="confusion-matrix"' in page
    assert page.count('class="chart"') == 2 and "Precision-recall at IoU 0.5" in page
    assert 'class="sorted"><a href="' in page and "?sort=ap50" in page  # the next click sorts the other way
    assert world.staff_client("other_trainer").get(url).status_code == 404  # a private model's results


def test_model_page_shows_its_validation_results_and_the_evaluate_button(world):
    page = world.staff_client("owner").get(f"/admin/models_registry/trainedmodel/{world.model.pk}/change/")
    html = page.content.decode()
    assert 'id="validation-results"' in html and 'id="per-class-table"' in html and 'id="evaluate-link"' in html
    viewer_page = world.staff_client("publisher").get(f"/admin/models_registry/trainedmodel/{world.model.pk}/change/")
    assert 'id="evaluate-link"' not in viewer_page.content.decode()  # a Publisher starts no runs


def test_gallery_filters_orders_and_renders_pictures_once(world):
    client = world.staff_client("owner")
    evaluation = world.evaluation
    rows = list(evaluation.images.order_by("id"))
    rows[0].errors = 5
    rows[0].save()
    url = f"/admin/models_registry/evaluation/{evaluation.pk}/gallery/"
    page = client.get(url + "?order=worst").content.decode()
    pictures = re.findall(r'src="(/admin/models_registry/evaluation/\d+/gallery/(\d+)\.jpg)"', page)
    assert len(pictures) == len(rows) and int(pictures[0][1]) == rows[0].pk
    assert 'loading="lazy"' in page
    assert client.get(url + "?class=nothing-like-it").status_code == 200  # an unknown class: all images
    picture = client.get(pictures[0][0])
    assert picture.status_code == 200 and picture.content[:2] == b"\xff\xd8"
    cached = Path(default_storage.path(gallery_render_name(rows[0])))  # the local folder: the storage of the tests
    assert cached.is_file()
    stamp = cached.stat().st_mtime_ns
    client.get(pictures[0][0])
    assert cached.stat().st_mtime_ns == stamp  # drawn once


def test_gallery_page_reads_a_constant_number_of_rows(world):
    from models_registry.models import EvaluationImage

    client = world.staff_client("owner")
    url = f"/admin/models_registry/evaluation/{world.evaluation.pk}/gallery/"
    client.get(url)
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    template = world.evaluation.images.first()
    EvaluationImage.objects.bulk_create(
        [
            EvaluationImage(
                evaluation=world.evaluation,
                file_name=template.file_name,
                width=template.width,
                height=template.height,
                errors=i % 7,
            )
            for i in range(300)
        ]
    )
    with CaptureQueriesContext(connection) as many:
        page = client.get(url).content.decode()
    assert len(many) == len(few) and page.count("<figure") == 48


def test_api_gallery_filters_by_class_and_refuses_unknown_ones(world):
    client = world.client("owner")
    url = f"/api/evaluations/{world.evaluation.pk}/images/"
    everything = client.get(url).json()
    assert everything["count"] == world.evaluation.images.count() > 0
    assert client.get(url, {"class": "waste"}).json()["count"] == everything["count"]
    refused = client.get(url, {"class": "tyres"})
    assert refused.status_code == 400 and "waste" in refused.json()["errors"]["class"][0]
    detail = client.get(f"/api/evaluations/{world.evaluation.pk}/").json()
    assert detail["per_class"][0]["class"] == "waste" and detail["confusion"]["labels"] == ["waste", "background"]
    assert detail["run"] == world.run.pk


def test_evaluation_runs_are_refused_with_reasons(world, make_dataset):
    owner = world.users["owner"]
    other_classes = make_dataset(name="tyres only", classes=("tyres",))
    with pytest.raises(ApplicationError, match="share no class"):
        evaluation_run_create(model=world.model, dataset=other_classes, created_by=owner)
    with pytest.raises(ApplicationError, match="no training manifest"):
        evaluation_run_create(model=world.published, dataset=None, split="model", created_by=owner)
    with pytest.raises(ApplicationError, match="Invalid evaluation parameters") as caught:
        evaluation_run_create(model=world.model, dataset=world.dataset, parameters={"epochs": 3}, created_by=owner)
    assert "epochs" in caught.value.extra
    with pytest.raises(PermissionDenied):
        evaluation_run_create(model=world.published, dataset=world.dataset, created_by=world.users["viewer"])
    with pytest.raises(ApplicationError, match="No such model"):
        evaluation_run_create(model=world.model, dataset=world.dataset, created_by=world.users["other_trainer"])
    assert not TrainingRun.objects.filter(kind="evaluate").exists()


def test_evaluation_on_its_own_split_uses_the_manifest_dataset_and_retries_but_does_not_resume(world):
    owner = world.users["owner"]
    run = evaluation_run_create(model=world.model, dataset=None, split="model", created_by=owner)
    assert run.kind == "evaluate" and run.dataset == world.dataset and run.parameters["evaluate"] == "model"
    assert run.evaluated_model == world.model and run.max_epochs == 1
    TrainingRun.objects.filter(pk=run.pk).update(status="failed")
    run.refresh_from_db()
    again = training_run_retry(run=run, user=owner)
    assert again.kind == "evaluate" and again.retry_of == run and again.attempt == 2
    assert again.parameters == run.parameters
    with pytest.raises(ApplicationError, match="no checkpoint to resume"):
        training_run_resume(run=run, user=owner)


def test_admin_evaluate_form_queues_an_evaluation_or_says_why_not(world, make_dataset):
    client = world.staff_client("owner")
    url = "/admin/training/trainingrun/evaluate/"
    assert client.get(url + f"?model={world.model.pk}").status_code == 200
    form = {
        "model": world.model.pk,
        "split": "all",
        "split_strategy": "random",
        "val_fraction": 0.2,
        "seed": 0,
        "split_cell_m": 250,
        "score_threshold": 0.3,
        "iou_threshold": 0.5,
    }
    missing = client.post(url, form)
    assert missing.status_code == 200 and "Choose a dataset" in missing.content.decode()
    queued = client.post(url, {**form, "dataset": world.dataset.pk})
    assert queued.status_code == 302
    run = TrainingRun.objects.get(kind="evaluate")
    assert run.parameters["score_threshold"] == 0.3 and run.created_by == world.users["owner"]
    assert world.staff_client("publisher").get(url).status_code == 403


def test_compare_shows_per_class_rows(world, tmp_path):
    from tests.world import make_evaluation, register_model
    from training.services import training_run_create

    run2 = training_run_create(dataset=world.dataset, parameters={"epochs": 1}, created_by=world.users["owner"])
    TrainingRun.objects.filter(pk=run2.pk).update(status="succeeded")
    run2.refresh_from_db()
    other = register_model(run2, tmp_path)
    make_evaluation(other, run2, world.dataset)
    page = world.staff_client("owner").get(
        f"/admin/training/trainingrun/compare/?kind=models&ids={world.model.pk},{other.pk}"
    )
    html = page.content.decode()
    assert "AP50 · waste" in html and "recall · waste" in html


def test_evaluate_command_queues_or_exits_with_a_reason(world):
    out = io.StringIO()
    call_command("evaluate", "--model", str(world.model.pk), "--dataset", "shared", "--user", "owner", stdout=out)
    assert "Queued evaluation run" in out.getvalue()
    with pytest.raises(CommandError, match="no training manifest"):
        call_command("evaluate", "--model", str(world.published.pk), "--split", "model", "--user", "owner")
    with pytest.raises(CommandError, match="No trained model"):
        call_command("evaluate", "--model", "999999", "--dataset", "shared", "--user", "owner")


def test_model_detail_serves_its_per_class_validation(world):
    detail = world.client("owner").get(f"/api/trained-models/{world.model.pk}/").json()
    assert detail["validation"]["evaluation"] == world.evaluation.pk
    assert detail["validation"]["per_class"][0]["class"] == "waste"
    published = world.client("viewer").get(f"/api/trained-models/{world.published.pk}/").json()
    assert published["validation"] is None  # a registered base model has no validation of its own


def test_the_models_list_action_opens_the_evaluate_form_for_one_model(world):
    client = world.staff_client("owner")
    url = "/admin/models_registry/trainedmodel/"
    response = client.post(url, {"action": "evaluate", "_selected_action": [world.model.pk]})
    assert response.status_code == 302 and response["Location"].endswith(f"/evaluate/?model={world.model.pk}")
    form = client.get(response["Location"]).content.decode()
    assert f'<option value="{world.model.pk}" selected>' in form
    actions = world.staff_client("publisher").get(url).content.decode()
    assert 'value="evaluate"' not in actions  # a Publisher starts no runs
