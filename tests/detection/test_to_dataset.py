"""Reviewed sites into a dataset: confirmed, corrected and drawn sites become boxes of tiles cut from the run's
orthophoto, rejected ones hard-negative tiles, classes matched by name, and each image and box says where it came
from; unreviewed detections stay out, and runs that cannot give training data are refused."""

from __future__ import annotations

import pytest
from django.contrib.gis.geos import Point

from core.errors import ApplicationError
from datasets.import_execution import dataset_import_execute
from datasets.models import Annotation, DatasetImage
from datasets.orthophotos import orthophoto_store
from detection.models import Detection
from detection.review import place
from detection.services import detection_run_create
from detection.to_dataset import reviewed_sites_to_dataset
from models_registry.models import TrainedModel
from tests.detection.scenes import rotated, scene, write_geotiff
from training.models import TrainingRun

pytestmark = pytest.mark.django_db
PILES = [(60, 60, 60, 60), (300, 80, 64, 56), (120, 330, 60, 64), (420, 360, 60, 60)]


def reviewed_run(world, tmp_path):
    TrainedModel.objects.filter(pk=world.model.pk).update(class_names=["waste", "rubble"])
    painted = scene(640, 512, PILES, seed=3)
    path = write_geotiff(
        tmp_path / "area.tif", painted.pixels, srid=32633, geotransform=rotated((500_000, 5_100_000), 0.2, 8)
    )
    ortho = orthophoto_store(dataset=world.dataset, source=path, name="area.tif", created_by=world.users["admin"])
    run = detection_run_create(model=world.model, orthophotos=[ortho], created_by=world.users["owner"])
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    run.refresh_from_db()
    reviewer = world.users["publisher"]
    rows = {}
    for name, box, state, extra in (
        ("confirmed", painted.boxes[0], "confirmed", {}),
        (
            "corrected",
            painted.boxes[1],
            "confirmed",
            {"model_box": [1, 1, 2, 2], "model_class": "waste", "class_name": "rubble", "label": 1},
        ),
        ("drawn", painted.boxes[2], "confirmed", {"origin": "reviewer"}),
        ("unreviewed", painted.boxes[3], "new", {}),
        ("false alarm", (560, 200, 600, 240), "rejected", {}),
    ):
        detection = Detection(
            run=run, orthophoto=ortho, label=extra.pop("label", 0), class_name=extra.pop("class_name", "waste"),
            score=0.8, state=state, reviewed_by=reviewer if state != "new" else None, **extra,
        )  # fmt: skip
        place(detection, [float(v) for v in box])
        detection.save()
        rows[name] = detection
    return run, rows


def test_reviewed_sites_become_boxes_and_false_alarms_hard_negatives_with_their_provenance(world, tmp_path):
    run, rows = reviewed_run(world, tmp_path)
    job = reviewed_sites_to_dataset(run=run, user=world.users["admin"], dataset=world.dataset, tile_size=256)
    assert job.parameters["source"] == {"detection_run": run.pk, "model": world.model.pk}
    dataset_import_execute(import_id=job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error_message
    images = DatasetImage.objects.filter(dataset=world.dataset, source__detection_run=run.pk)
    assert images.count() == job.images_imported > 0
    assert all(image.source == {"detection_run": run.pk, "model": world.model.pk} for image in images)
    boxes = Annotation.objects.filter(image__in=images).select_related("dataset_class")
    found = {box.source["detection"] for box in boxes}
    assert found == {rows["confirmed"].pk, rows["corrected"].pk, rows["drawn"].pk}  # never the unreviewed one
    corrected = [b for b in boxes if b.source["detection"] == rows["corrected"].pk]
    assert {b.dataset_class.name for b in corrected} == {"rubble"} and "rubble" in world.dataset.class_names()
    assert {b.source["model_class"] for b in corrected} == {"waste"}  # what the model had said
    assert {b.source["reviewer"] for b in boxes} == {"publisher"}
    assert {b.dataset_class.name for b in boxes if b.source["detection"] == rows["confirmed"].pk} == {"waste"}
    # The false alarm's tile is kept as a hard negative: an image without boxes whose outline holds it.
    assert job.stats["hard_negatives"] >= 1
    alarm = rows["false alarm"].geometry.centroid
    negatives = [i for i in images if not i.annotations.exists() and i.footprint.contains(Point(alarm.coords))]
    assert negatives


def test_runs_that_cannot_give_training_data_are_refused(world, tmp_path):
    run, rows = reviewed_run(world, tmp_path)
    admin = world.users["admin"]
    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    run.refresh_from_db()
    with pytest.raises(ApplicationError, match="added once it has finished"):
        reviewed_sites_to_dataset(run=run, user=admin, dataset=world.dataset)
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    run.refresh_from_db()
    Detection.objects.filter(run=run, state="confirmed").update(state="new")
    with pytest.raises(ApplicationError, match="no confirmed detection yet"):
        reviewed_sites_to_dataset(run=run, user=admin, dataset=world.dataset)
    with pytest.raises(ApplicationError, match="No such detection run"):
        Detection.objects.filter(run=run).update(state="confirmed")
        reviewed_sites_to_dataset(run=run, user=world.users["other_trainer"], dataset=world.dataset)


def test_the_command_and_the_console_queue_the_same_import(world, tmp_path):
    import io

    from django.core.management import CommandError, call_command

    from datasets.models import DatasetImport

    run, _rows = reviewed_run(world, tmp_path)
    before = set(DatasetImport.objects.values_list("pk", flat=True))
    out = io.StringIO()
    call_command("detections_to_dataset", str(run.pk), "--name", "from the cli", "--user", "admin", stdout=out)
    job = DatasetImport.objects.exclude(pk__in=before).get()
    assert f"Dataset import #{job.pk} is queued" in out.getvalue() and job.new_dataset_name == "from the cli"
    with pytest.raises(CommandError, match=f"No detection run #{run.pk}"):
        call_command("detections_to_dataset", str(run.pk), "--name", "x", "--user", "other_trainer")
    # The console: the form's refusal on the page, then a queued import and its page.
    client = world.staff_client("admin")
    url = f"/admin/detection/detectionrun/{run.pk}/to-dataset/"
    page = client.post(url, {"hard_negatives": "on"}).content.decode()
    assert "Choose an existing dataset or name a new one." in page
    assert DatasetImport.objects.exclude(pk__in=before).count() == 1
    response = client.post(url, {"dataset": world.dataset.pk, "tile_size": 256, "hard_negatives": "on"})
    second = DatasetImport.objects.exclude(pk__in=[*before, job.pk]).get()
    assert response.status_code == 302 and response["Location"].endswith(f"/datasetimport/{second.pk}/change/")
    assert second.dataset == world.dataset and second.parameters["options"]["tile_size"] == 256
    assert world.staff_client("other_trainer").get(url).status_code == 404
