"""Dead-worker reaping, orphan killing, time limits and cancel on the command line (unit level)."""

import io
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command
from django.utils import timezone

from core.errors import ApplicationError
from core.storage import stored_names
from engine.supervisor import kill_training_process
from scheduler.reaper import reaper_schedule_ensure, training_runs_reap_stale
from training.models import TrainingRun
from training.services import training_run_create

pytestmark = pytest.mark.django_db


def running(dataset, *, heartbeat_age: float, **fields):
    run = training_run_create(dataset=dataset)
    TrainingRun.objects.filter(pk=run.pk).update(
        status="running",
        started_at=timezone.now(),
        heartbeat_at=timezone.now() - timedelta(seconds=heartbeat_age),
        **fields,
    )
    return TrainingRun.objects.get(pk=run.pk)


def test_reaper_fails_runs_without_heartbeat_and_leaves_the_others(make_dataset):
    dataset = make_dataset()
    stale = running(dataset, heartbeat_age=120)
    fresh = running(dataset, heartbeat_age=5)
    queued = training_run_create(dataset=dataset)
    assert training_runs_reap_stale(limit_seconds=60) == [stale.pk]
    stale.refresh_from_db()
    fresh.refresh_from_db()
    queued.refresh_from_db()
    assert stale.status == "failed" and "stopped sending heartbeats" in stale.error_message and stale.finished_at
    assert fresh.status == "running" and queued.status == "queued"
    assert training_runs_reap_stale(limit_seconds=60) == []


def fake_child(job_file):
    """A process whose command line looks like the training child of ``job_file``."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "engine.child", str(job_file)],
        start_new_session=True,
    )


def test_reaper_kills_the_orphaned_training_process_of_that_run_only(make_dataset):
    import socket

    dataset = make_dataset()
    run = running(dataset, heartbeat_age=300, worker_host=socket.gethostname())
    orphan = fake_child(run.work_dir / "job.json")
    stranger = fake_child("/elsewhere/job.json")
    TrainingRun.objects.filter(pk=run.pk).update(training_pid=orphan.pid)
    try:
        assert training_runs_reap_stale(limit_seconds=60) == [run.pk]
        assert orphan.wait(timeout=5) == -9
        assert not kill_training_process(stranger.pid, run.work_dir / "job.json")  # not that run's child
        assert stranger.poll() is None
    finally:
        stranger.kill()
        orphan.kill()


def test_kill_refuses_pids_that_are_not_training_children(tmp_path):
    import os

    assert not kill_training_process(os.getpid(), tmp_path / "job.json")
    assert not kill_training_process(2**22 + 12345, tmp_path / "job.json")


def test_reaper_schedule_is_idempotent():
    from django_q.models import Schedule

    reaper_schedule_ensure()
    reaper_schedule_ensure()
    schedule = Schedule.objects.get(name="reap stale training runs")
    assert schedule.func == "scheduler.tasks.reap_stale_runs" and schedule.repeats == -1


@pytest.mark.parametrize("limit", [0, -5, 10**9, 2.5, True])
def test_time_limit_out_of_range_is_refused(make_dataset, limit):
    with pytest.raises(ApplicationError, match="Invalid time limit"):
        training_run_create(dataset=make_dataset(), time_limit_seconds=limit)


def test_cancel_on_the_command_line(make_dataset):
    from core.commands import ensure_operator

    ensure_operator()
    run = training_run_create(dataset=make_dataset())
    out = io.StringIO()
    call_command("cancel_run", str(run.pk), stdout=out)
    run.refresh_from_db()
    assert run.status == "cancelled" and "is cancelled" in out.getvalue()
    with pytest.raises(CommandError, match="only queued or running runs can be cancelled"):
        call_command("cancel_run", str(run.pk), stdout=io.StringIO())
    with pytest.raises(CommandError, match="No training run #999999"):
        call_command("cancel_run", "999999", stdout=io.StringIO())


def test_resume_needs_a_finished_attempt_with_a_checkpoint(make_dataset):
    from training.services import training_run_resume

    run = training_run_create(dataset=make_dataset())
    with pytest.raises(ApplicationError, match="only failed or cancelled runs can be resumed"):
        training_run_resume(run=run)
    TrainingRun.objects.filter(pk=run.pk).update(status="failed")
    run.refresh_from_db()
    with pytest.raises(ApplicationError, match="kept no checkpoint"):
        training_run_resume(run=run)
    for epoch in (2, 4):  # what a worker pushed to the storage (on any host), of its 5 epochs
        default_storage.save(f"runs/{run.pk}/checkpoints/epoch_{epoch}.pth", ContentFile(b"x"))
    resumed = training_run_resume(run=run)
    assert resumed.resume_checkpoint == f"runs/{run.pk}/checkpoints/epoch_4.pth" and resumed.retry_of == run
    assert resumed.parameters == run.parameters and resumed.name.endswith("(resumed)")


def test_a_run_whose_checkpoint_is_of_its_last_epoch_is_not_resumed(make_dataset):
    """Its host died after the last epoch trained (in the final validation, say): nothing is left to train, and a
    resume would end at once without a checkpoint of its own. Refused, saying so; nothing is queued."""
    from training.services import training_run_resume

    run = training_run_create(dataset=make_dataset(), parameters={"epochs": 3})
    TrainingRun.objects.filter(pk=run.pk).update(status="failed")
    run.refresh_from_db()
    default_storage.save(f"runs/{run.pk}/checkpoints/epoch_3.pth", ContentFile(b"x"))
    before = TrainingRun.objects.count()
    with pytest.raises(ApplicationError, match=r"stopped after its last epoch \(3 of 3\) had trained"):
        training_run_resume(run=run)
    assert TrainingRun.objects.count() == before


def test_a_resume_whose_stored_checkpoint_is_gone_fails_saying_so(make_dataset):
    from training.execution.train import resume_checkpoint

    run = training_run_create(dataset=make_dataset())
    run.resume_checkpoint = f"runs/{run.pk}/checkpoints/epoch_3.pth"  # removed since the resume was queued
    with pytest.raises(ApplicationError, match=r"no longer stored \(epoch_3.pth\); retry the run instead"):
        resume_checkpoint(run)
    default_storage.save(run.resume_checkpoint, ContentFile(b"weights"))
    assert Path(resume_checkpoint(run)).read_bytes() == b"weights"  # fetched into the run's scratch folder
    assert Path(resume_checkpoint(run)).parent == run.work_dir / "resume"


def test_resume_override_makes_mmengine_resume():
    from engine.config import build_overrides
    from engine.params import validate_params
    from engine.presets import PRESETS

    kwargs = dict(
        preset=PRESETS["retinanet_r18_tiny"],
        params=validate_params("retinanet_r18_tiny", None),
        classes=["a"],
        train_ann_file="t",
        val_ann_file="v",
        image_root="/m",
        work_dir="/w",
    )
    assert build_overrides(**kwargs)["resume"] is False
    resumed = build_overrides(**kwargs, load_from="/base.pth", resume_from="/w/epoch_3.pth")
    assert (resumed["resume"], resumed["load_from"]) == (True, "/w/epoch_3.pth")


def test_a_run_refuses_to_start_below_the_free_disk_floor(make_dataset, settings):
    from training.execution import training_run_execute

    settings.TRAINING_MIN_FREE_BYTES = 10**18  # an exabyte: never free
    run = training_run_create(dataset=make_dataset())
    assert training_run_execute(run_id=run.pk) == "failed"
    run.refresh_from_db()
    assert run.status == "failed" and "MiB free in the work area" in run.error_message
    assert not list(run.work_dir.rglob("*.json"))  # nothing exported, nothing left to clean


@pytest.mark.django_db(transaction=True)
def test_deleting_a_run_removes_its_stored_files_after_the_commit(make_dataset):
    from training.services import training_run_delete

    run = training_run_create(dataset=make_dataset())
    other = training_run_create(dataset=run.dataset)
    TrainingRun.objects.filter(pk=run.pk).update(status="failed")
    for owner in (run, other):
        default_storage.save(f"runs/{owner.pk}/train.log", ContentFile(b"log"))
        default_storage.save(f"runs/{owner.pk}/checkpoints/epoch_1.pth", ContentFile(b"x"))
    training_run_delete(run=run)
    assert not TrainingRun.objects.filter(pk=run.pk).exists()
    assert stored_names(f"runs/{run.pk}") == [] and stored_names(f"runs/{run.pk}/checkpoints") == []
    assert stored_names(f"runs/{other.pk}") == [f"runs/{other.pk}/train.log"]  # another run's files stay


def test_the_broker_never_hands_a_training_run_out_twice(settings):
    """django-q2 re-delivers an unacknowledged task after `retry` seconds; that must exceed the longest run."""
    from django.conf import settings as live

    q = live.Q_CLUSTER
    assert q["timeout"] > live.TRAINING_RUN_TIMEOUT and q["retry"] > q["timeout"]
    assert q["max_attempts"] == 1
