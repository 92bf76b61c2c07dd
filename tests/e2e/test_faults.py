"""Faults with real workers and real training: cancel, time limit, a worker killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from core.storage import open_stored, stored_names
from datasets.demo import demo_dataset_create
from engine.config import checkpoint_epoch
from scheduler.reaper import reaper_schedule_ensure
from tests.conftest import start_worker, stop_worker, wait_for
from tests.e2e.waiting import finished, training
from training.models import TrainingRun
from training.run_files import LOG, stored_events, stored_name
from training.selectors import last_checkpoint
from training.services import training_run_cancel, training_run_create, training_run_retry

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def alive(pid: int) -> bool:
    try:  # a zombie is dead for our purposes
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def parent_of(pid: int) -> int:
    return psutil.Process(pid).ppid()


def test_cancel_stops_a_running_training_within_10_seconds(worker):
    dataset = demo_dataset_create(name="cancel me", images=60, seed=2)
    run = training(training_run_create(dataset=dataset, parameters={"epochs": 20}).pk)
    child = run.training_pid
    started = time.monotonic()
    training_run_cancel(run=run)
    wait_for(lambda: not alive(child), timeout=10, interval=0.2, message="the training process to end")
    assert time.monotonic() - started < 10
    run.refresh_from_db()
    assert run.status == "cancelled" and run.finished_at
    # The worker's scratch folder goes; this run was cancelled before its first checkpoint: none is stored.
    wait_for(lambda: not run.work_dir.exists(), timeout=10, message="the scratch folder removed")
    assert last_checkpoint(run) is None

    # The worker is free for the next run, and a per-run time limit ends that one as failed.
    limited = training_run_create(dataset=dataset, parameters={"epochs": 20}, time_limit_seconds=8)
    limited = finished(limited.pk, timeout=120)
    assert limited.status == "failed" and "time limit of 8 s" in limited.error_message
    assert not alive(limited.training_pid or child)


def test_worker_killed_mid_training_is_reaped_and_its_run_can_be_retried(transactional_db, tmp_path):
    from django.db import connection

    reaper_schedule_ensure()
    cluster = start_worker(connection.settings_dict["NAME"], tmp_path / "qcluster.log", DUMPSITE_HEARTBEAT_LIMIT="10")
    try:
        dataset = demo_dataset_create(name="kill me", images=48, seed=4)
        run = training(training_run_create(dataset=dataset, parameters={"epochs": 3}).pk, min_iter=3)
        child = run.training_pid
        worker_process = parent_of(child)
        assert worker_process != cluster.proc.pid  # the django-q worker, not the cluster's sentinel
        os.kill(worker_process, signal.SIGKILL)
        killed = time.monotonic()

        wait_for(lambda: not alive(child), timeout=10, interval=0.2, message="the orphaned training to stop")
        # The cluster lives on: its agent sees at once (a tick, 2 s) that the run's worker process is gone, without
        # waiting for the heartbeat limit.
        run = wait_for(
            lambda: TrainingRun.objects.filter(pk=run.pk, status="failed").first(),
            timeout=30,
            interval=0.2,
            message="the run to be failed",
        )
        assert time.monotonic() - killed < 2 + 3, "within a tick of the agent and a margin"
        assert f"The worker process {run.worker_process} is gone" in run.error_message

        retry = finished(training_run_retry(run=run).pk)
        assert retry.status == "succeeded", (retry.error_message, cluster.output()[-2000:])
        assert retry.retry_of_id == run.pk and "(attempt 2)" in retry.name
    finally:
        stop_worker(cluster)


def test_two_clusters_execute_each_of_six_runs_exactly_once(transactional_db, tmp_path):
    from django.db import connection
    from django_q.models import Task

    from models_registry.models import TrainedModel

    dataset = demo_dataset_create(name="many", images=16, seed=6)
    runs = [
        training_run_create(dataset=dataset, name=f"run {i}", parameters={"epochs": 1, "batch_size": 8})
        for i in range(6)
    ]
    db_name = connection.settings_dict["NAME"]
    # Two hosts sharing the database: each cluster has a host identity of its own.
    clusters = [start_worker(db_name, tmp_path / f"cluster{i}.log", DUMPSITE_HOST_ID=f"host-{i}") for i in range(2)]
    try:
        for run in runs:
            finished(run.pk, timeout=600)
        # Which cluster ran what: the worker process that claimed a run belongs to one cluster's process group,
        # and the run records that cluster's host identity and worker.
        ran = TrainingRun.objects.filter(pk__in=[r.pk for r in runs]).select_related("worker")
        pids = {int(r.worker_process.rsplit(":", 1)[1]) for r in ran}
        groups = {os.getpgid(pid) for pid in pids}
        assert groups == {c.proc.pid for c in clusters}, (pids, groups)
        for r in ran:
            host = f"host-{[c.proc.pid for c in clusters].index(os.getpgid(int(r.worker_process.rsplit(':', 1)[1])))}"
            assert r.worker_host == r.worker.host == host and r.worker.name == f"{host}:{r.worker.pid}"
    finally:
        for cluster in clusters:
            stop_worker(cluster)
    for run in runs:
        run.refresh_from_db()
        assert run.status == "succeeded", run.error_message
        starts = [e for e in stored_events(run.pk) if e.get("event") == "start"]
        assert len(starts) == 1, (run.pk, starts)
        assert TrainedModel.objects.filter(source_run=run).count() == 1
    # The broker handed each task out once: one finished task per run, none left in the queue.
    done = Task.objects.filter(func="scheduler.tasks.execute_training_run")
    assert sorted(t.args[0] for t in done) == sorted(r.pk for r in runs)
    assert all(t.success for t in done)


def test_a_cancelled_run_resumes_from_its_last_checkpoint(worker):
    from models_registry.models import TrainedModel
    from training.services import training_run_resume

    dataset = demo_dataset_create(name="resume me", images=48, seed=8)
    run = training_run_create(dataset=dataset, parameters={"epochs": 4})
    # Cancel once the first epoch is checkpointed and validated.
    wait_for(
        lambda: last_checkpoint(run) and any(e["event"] == "val" for e in stored_events(run.pk)),
        timeout=300,
        message="the first epoch's checkpoint stored and its validation",
    )
    training_run_cancel(run=run)
    run = finished(run.pk)
    # The worker stops the process group and removes its scratch folder; the last epoch checkpoint is stored.
    wait_for(lambda: not run.work_dir.exists(), timeout=20, message="the scratch folder removed")
    kept = stored_names(f"runs/{run.pk}/checkpoints")
    assert run.status == "cancelled" and kept == [last_checkpoint(run)], kept
    assert kept[0].rsplit("/", 1)[-1].startswith("epoch_"), kept

    resumed = finished(training_run_resume(run=run).pk)
    assert resumed.status == "succeeded", resumed.error_message
    assert resumed.retry_of_id == run.pk and resumed.resume_checkpoint == kept[0]
    start = next(e for e in stored_events(resumed.pk) if e["event"] == "start")
    done_epochs = checkpoint_epoch(kept[0])
    assert start["resumed_iter"] == done_epochs * start["iters_per_epoch"] > 0  # continued, not restarted
    with open_stored(stored_name(resumed.pk, LOG)) as fh:
        log = fh.read().decode()
    # mmengine's own line after restoring the checkpoint (its config dump also says "resume", so that is not it).
    assert f"resumed epoch: {done_epochs}, iter: {start['resumed_iter']}" in log
    model = TrainedModel.objects.get(source_run=resumed)
    assert [h["epoch"] for h in model.metrics_history] == [1, 2, 3, 4]
