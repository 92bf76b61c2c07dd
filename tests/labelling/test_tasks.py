"""Labelling tasks from a detection run: the run's tiles with the model's own boxes (as it made them, before any
review), chosen by a rule; what a person corrected in CVAT comes back through the zip import, and the acceptance
report counts it box by box. Refusals change nothing."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from core.errors import ApplicationError
from core.storage import copy_stored, stored_names
from datasets.import_execution import dataset_import_execute
from datasets.imports import dataset_import_create
from datasets.models import Dataset
from detection.models import Detection
from labelling.acceptance import acceptance_by_model_version, labelling_task_acceptance
from labelling.building import build_labelling_task, part_folder, task_folder
from labelling.models import LabellingTask
from labelling.selection import iou
from labelling.services import labelling_task_create
from models_registry.evaluations import validation_of
from tests.detection.test_to_dataset import reviewed_run
from tests.labelling.tools import edit_with_datumaro, read_with_tool
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def built(world, run, **parameters) -> LabellingTask:
    task = labelling_task_create(user=world.users["publisher"], detection_run=run, parameters=parameters)
    build_labelling_task(task.pk)
    task.refresh_from_db()
    assert task.status == "succeeded", task.error
    return task


def archive(task: LabellingTask, name: str, tmp_path: Path) -> Path:
    """The task's stored archive ``name``, copied here."""
    target = tmp_path / f"task-{task.pk}-{name}"
    copy_stored(f"{task_folder(task.pk)}/{name}", target)
    return target


def unzip(path: Path, into: Path) -> Path:
    with zipfile.ZipFile(path) as zf:
        zf.extractall(into)
    return into


def test_a_runs_tiles_carry_the_models_own_boxes(world, tmp_path):
    run, rows = reviewed_run(world, tmp_path)
    task = built(world, run, tile_size=320)
    event = AuditEvent.objects.get(action="labelling task")
    assert (event.actor, event.object_id, event.detail["task"]) == (world.users["publisher"], world.model.pk, task.pk)
    assert task.model_version.startswith(f"{world.model.name} #{world.model.pk} (")
    by_name = {image["name"]: image for image in task.images}
    # 640 x 512 in tiles of 320: the four detections the model made lie in their tiles; the drawn site (a
    # reviewer's) is no model box, and the corrected one is exported where the model had put it.
    model_boxes = [b for image in task.images for b in image["boxes"]]
    assert len(model_boxes) == 4
    corrected = [b for b in model_boxes if b[2:6] == [1.0, 1.0, 1.0, 1.0]]
    assert corrected and corrected[0][0] == "waste"
    assert all(name.startswith("area_x") for name in by_name)
    assert {(i["width"], i["height"]) for i in task.images} <= {(320, 320), (320, 192)}
    assert task.stats == {"candidates": len(task.images), "chosen": len(task.images), "boxes": 4}
    names = ("cvat-coco.zip", "cvat-xml.zip", "label-studio.zip")  # the pictures are in each archive
    assert stored_names(task_folder(task.pk)) == [f"{task_folder(task.pk)}/{name}" for name in names]
    read = read_with_tool("cvat_xml", unzip(archive(task, "cvat-xml.zip", tmp_path), tmp_path / "xml"))
    for name, image in by_name.items():
        back = read["boxes"][name]
        assert [b[0] for b in back] == [b[0] for b in image["boxes"]]
        assert all(iou(s[2:6], b[1:5]) >= 0.999 for s, b in zip(image["boxes"], back, strict=True))
    # The rule "uncertain" keeps only tiles with a score in its band.
    Detection.objects.filter(pk=rows["false alarm"].pk).update(score=0.5)
    uncertain = built(world, run, tile_size=320, rule="uncertain", band=[0.4, 0.6])
    assert [len(i["boxes"]) for i in uncertain.images] == [1] and uncertain.images[0]["boxes"][0][1] == 0.5


def test_what_comes_back_from_cvat_is_counted_box_by_box(world, tmp_path):
    run, _rows = reviewed_run(world, tmp_path)
    task = built(world, run, tile_size=320)
    folder = unzip(archive(task, "cvat-coco.zip", tmp_path), tmp_path / "coco")
    sent = {i["name"]: i["boxes"] for i in task.images}
    first, second = sorted(n for n in sent if sent[n])[:2]
    keep, moved = sent[first][0], sent[second][0]
    edits = {
        first: [[keep[0], *keep[2:6]], ["rubble", 5.0, 5.0, 30.0, 30.0]],  # accepted as it was, and one added
        second: [[moved[0], moved[2] + moved[4] * 0.2, moved[3], moved[4], moved[5]]],  # moved: IoU ~0.67
    }
    edits.update({n: [] for n in sent if n not in (first, second)})  # every other box deleted
    back = edit_with_datumaro(folder, edits, tmp_path / "from-cvat.zip")
    job = dataset_import_create(
        upload=io.BytesIO(back.read_bytes()),
        archive_name="from-cvat.zip",
        dataset_name="labelled",
        user=world.users["admin"],
    )
    dataset_import_execute(import_id=job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.images_imported == len(sent), job.error_message
    labelled = Dataset.objects.get(name="labelled")
    report = labelling_task_acceptance(task=task, dataset=labelled, user=world.users["publisher"])
    exported = sum(len(b) for b in sent.values())
    assert report["exported"] == exported == 4
    assert (report["unchanged"], report["corrected"], report["added"]) == (1, 1, 1)
    assert report["removed"] == exported - 2
    assert report["acceptance_rate"] == 0.25 and report["images"] == len(sent) and report["images_missing"] == 0
    task.refresh_from_db()
    assert task.acceptance == report and task.returned_dataset == labelled
    assert acceptance_by_model_version([task]) == [
        {
            "model_version": task.model_version,
            "model": world.model.pk,
            "tasks": 1,
            "images": len(sent),
            "exported": 4,
            "unchanged": 1,
            "corrected": 1,
            "removed": 2,
            "added": 1,
            "acceptance_rate": 0.25,
        }
    ]
    out = io.StringIO()
    call_command("labelling_acceptance", "--user", "publisher", stdout=out)
    assert task.model_version[:40] in out.getvalue() and "25.0 %" in out.getvalue()


def test_refusals_change_nothing(world, tmp_path):
    run, _rows = reviewed_run(world, tmp_path)
    publisher = world.users["publisher"]
    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    run.refresh_from_db()
    with pytest.raises(ApplicationError, match="exported once it has finished"):
        labelling_task_create(user=publisher, detection_run=run)
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    run.refresh_from_db()
    refusals = [
        ({"rule": "guess"}, "Unknown rule"),
        ({"band": [0.7, 0.3]}, "Invalid band"),
        ({"count": 0}, "Invalid count"),
        ({"tile_size": 10}, "Invalid tile_size"),
        ({"image_url": "a\nb"}, "Invalid image_url"),
        ({"colour": "red"}, "Unknown parameter 'colour'"),
        ({"rule": "disagreement"}, "Name the model"),
    ]
    for parameters, message in refusals:
        with pytest.raises(ApplicationError, match=message):
            labelling_task_create(user=publisher, detection_run=run, parameters=parameters)
    with pytest.raises(ApplicationError, match="No such detection run"):
        labelling_task_create(user=world.users["other_trainer"], detection_run=run)
    with pytest.raises(PermissionDenied, match="You may not"):
        labelling_task_create(user=world.users["viewer"], detection_run=run)
    with pytest.raises(ApplicationError, match="not both"):
        labelling_task_create(user=publisher, detection_run=run, dataset=world.dataset)
    assert not LabellingTask.objects.exists()
    # The weakest classes are the lowest AP of the model's validation split; without one, the rule is refused.
    evaluation = validation_of(world.model)
    assert evaluation is not None
    weakest = min(evaluation.per_class, key=lambda r: (r["ap"], r["class"]))["class"]
    task = labelling_task_create(user=publisher, detection_run=run, parameters={"rule": "weak_classes"})
    assert task.parameters["classes"] == [weakest]
    task.delete()
    world.model.evaluations.all().delete()
    with pytest.raises(ApplicationError, match="no per-class AP"):
        labelling_task_create(user=publisher, detection_run=run, parameters={"rule": "weak_classes"})
    # A rule no tile meets fails the task with its reason, and leaves no folder.
    task = labelling_task_create(user=publisher, detection_run=run, parameters={"rule": "uncertain", "band": [0, 0.1]})
    build_labelling_task(task.pk)
    task.refresh_from_db()
    assert task.status == "failed" and "No tile matches the rule 'uncertain'" in task.error
    assert not stored_names(task_folder(task.pk)) and not part_folder(task.pk).exists()
    with pytest.raises(ApplicationError, match="is failed: nothing was exported"):
        labelling_task_acceptance(task=task, dataset=world.dataset, user=publisher)
    with pytest.raises(CommandError, match=f"No detection run #{run.pk}"):
        call_command("labelling_task", "--detection-run", str(run.pk), "--user", "other_trainer")


def test_chosen_tiles_can_wait_in_a_dataset_marked_to_label(world, tmp_path):
    run, _rows = reviewed_run(world, tmp_path)
    admin, publisher = world.users["admin"], world.users["publisher"]
    before = world.dataset.images.count()
    with pytest.raises(PermissionDenied, match="You may not change dataset"):
        labelling_task_create(user=publisher, detection_run=run, to_label=world.dataset)
    for expected_added in (2, 0):  # the second time, the same pictures are there already
        task = labelling_task_create(
            user=admin, detection_run=run, to_label=world.dataset, parameters={"tile_size": 320, "count": 2}
        )
        build_labelling_task(task.pk)
        task.refresh_from_db()
        assert task.status == "succeeded", task.error
        assert task.stats["to_label_added"] == expected_added
        assert task.stats["to_label_already_there"] == 2 - expected_added
    waiting = world.dataset.images.filter(source__to_label=True)
    assert world.dataset.images.count() == before + 2 == before + waiting.count()
    assert not any(i.enabled for i in waiting) and not any(i.annotations.exists() for i in waiting)
    assert {i.original_name for i in waiting} == {i["name"] for i in task.images}
    assert all(i.location is not None and i.source["model_version"] == task.model_version for i in waiting)


def test_a_task_whose_worker_died_is_failed_and_its_files_removed(world, tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    from labelling.building import labelling_tasks_fail_stale, stale_after

    run, _rows = reviewed_run(world, tmp_path)
    dead, alive = (labelling_task_create(user=world.users["publisher"], detection_run=run) for _ in range(2))
    now = timezone.now()
    LabellingTask.objects.filter(pk=dead.pk).update(status="running", heartbeat_at=now - stale_after() - timedelta(1))
    LabellingTask.objects.filter(pk=alive.pk).update(status="running", heartbeat_at=now - timedelta(seconds=30))
    part = part_folder(dead.pk)
    part.mkdir(parents=True)
    assert labelling_tasks_fail_stale(now) == 1 and labelling_tasks_fail_stale(now) == 0
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == "failed" and "stopped reporting" in dead.error and not part.exists()
    assert alive.status == "running"
