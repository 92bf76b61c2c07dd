"""A succeeded run's last step: its files stored in the registry read once, and its scratch space removed only
after the run's final state is committed (a registration refused at the last moment leaves the run resumable from
its stored checkpoint)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from core.errors import ApplicationError
from core.storage import open_stored, store_file, stored_names
from datasets.coco_export import export_coco
from models_registry.models import TrainedModel
from models_registry.services import sha256_file
from training.execution.common import sync_of
from training.execution.train import register_and_succeed
from training.models import TrainingRun
from training.selectors import last_checkpoint
from training.services import training_run_create

pytestmark = pytest.mark.django_db


def test_a_file_is_stored_with_its_hash_computed_on_the_way_or_moved(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    source = tmp_path / "a.pth"
    source.write_bytes(b"weights" * 300_000)
    expected = sha256_file(source)
    assert store_file(source, "models/k/copy.pth") == expected
    copy = tmp_path / "media" / "models" / "k" / "copy.pth"
    assert source.exists() and copy.read_bytes() == source.read_bytes()
    inode = source.stat().st_ino
    assert store_file(source, "models/k/moved.pth", move=True) == expected
    assert not source.exists() and (copy.parent / "moved.pth").stat().st_ino == inode
    assert sorted(p.name for p in copy.parent.iterdir()) == ["copy.pth", "moved.pth"]  # no partial file left


def zip_of(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    return buffer.getvalue()


RESUMABLE = zip_of(b"resumable")


def finished_child(run: TrainingRun, tmp_path: Path):
    """What a training child leaves in the run's work dir: the export, an epoch checkpoint, the slim model."""
    export = export_coco(run.dataset, run.work_dir / "data", val_fraction=0.34, seed=0)
    (run.work_dir / "mmengine").mkdir(parents=True)
    (run.work_dir / "mmengine" / "epoch_2.pth").write_bytes(RESUMABLE)  # a zip archive, as torch.save writes
    (run.work_dir / "mmengine" / "last_checkpoint").write_text(str(run.work_dir / "mmengine" / "epoch_2.pth"))
    sync_of(run).push()  # as the worker stored it while the run trained
    output = run.work_dir / "output"
    output.mkdir()
    (output / "model.pth").write_bytes(b"slim weights")
    (output / "config.json").write_text(json.dumps({"model": {"type": "RetinaNet"}}))
    outcome = {
        "model_file": str(output / "model.pth"),
        "config_file": str(output / "config.json"),
        "classes": run.dataset.class_names(),
        "checkpoint_epoch": 2,
        "epochs_trained": 2,
        "max_epochs": 2,
    }
    history = [{"epoch": 1, "bbox_mAP": 0.2, "bbox_mAP_50": 0.5}, {"epoch": 2, "bbox_mAP": 0.3, "bbox_mAP_50": 0.6}]
    return export, outcome, history


def a_run(world, status: str) -> TrainingRun:
    run = training_run_create(dataset=world.dataset, parameters={"epochs": 2}, created_by=world.users["owner"])
    TrainingRun.objects.filter(pk=run.pk).update(status=status)
    run.refresh_from_db()
    return run


def test_the_work_dir_goes_only_after_the_success_is_committed(world, tmp_path, django_capture_on_commit_callbacks):
    run = a_run(world, "running")
    export, outcome, history = finished_child(run, tmp_path)
    with django_capture_on_commit_callbacks(execute=False) as pending:
        register_and_succeed(run, export, outcome=outcome, history=history, log_tail="done")
    run.refresh_from_db()
    assert run.status == "succeeded" and TrainedModel.objects.filter(source_run=run, best_epoch=2).count() == 1
    assert (run.work_dir / "mmengine" / "epoch_2.pth").exists()  # still there until the commit
    assert last_checkpoint(run) == f"runs/{run.pk}/checkpoints/epoch_2.pth"  # and the stored one too
    for callback in pending:
        callback()
    assert not run.work_dir.exists()  # a worker's disk keeps nothing of a run that ended
    assert last_checkpoint(run) is None  # a succeeded run is not resumed: its model is in the registry


def test_a_registration_refused_at_the_last_moment_keeps_the_run_resumable(world, tmp_path):
    run = a_run(world, "cancelled")  # cancelled while its model was being registered
    export, outcome, history = finished_child(run, tmp_path)
    models_before, stored_before = TrainedModel.objects.count(), stored_names("models")
    with pytest.raises(ApplicationError, match="stopped being 'running'"):
        register_and_succeed(run, export, outcome=outcome, history=history, log_tail="done")
    assert TrainedModel.objects.count() == models_before  # rolled back, its stored files removed
    assert stored_names("models") == stored_before
    with open_stored(last_checkpoint(run)) as fh:
        assert fh.read() == RESUMABLE
    assert TrainingRun.objects.get(pk=run.pk).status == "cancelled"
