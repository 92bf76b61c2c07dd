"""A run whose worker process is gone is failed at once by its own host, with the process identified by pid *and*
start time (unit level; the end-to-end cases with real clusters are in tests/e2e/test_dead_workers.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.utils import timezone

from engine.processes import is_alive, started_at
from scheduler.reaper import training_runs_reconcile_host
from training.models import TrainingRun
from training.services import training_run_create, training_run_fail_gone

pytestmark = pytest.mark.django_db


def sleeper(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *argv], start_new_session=True)


def gone_pid() -> int:
    """The pid of a process that has ended (and been waited for)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def running_on(dataset, host: str, **fields) -> TrainingRun:
    run = training_run_create(dataset=dataset)
    TrainingRun.objects.filter(pk=run.pk).update(
        status="running", started_at=timezone.now(), heartbeat_at=timezone.now(), worker_host=host, **fields
    )
    return TrainingRun.objects.get(pk=run.pk)


def test_a_process_is_its_pid_and_its_start_time():
    proc = sleeper()
    try:
        started = started_at(proc.pid)
        assert started is not None and is_alive(proc.pid, started)
        assert is_alive(proc.pid, None)  # a run recorded before start times: the pid alone
        assert not is_alive(proc.pid, started - 100)  # the same pid, another process
    finally:
        proc.kill()
        proc.wait()
    assert not is_alive(proc.pid, started) and started_at(None) is None


def test_a_run_whose_worker_process_died_fails_at_once_and_its_leftovers_end(make_dataset, settings):
    settings.DUMPSITE_HOST_ID = "this-host"
    dataset = make_dataset()
    run = running_on(dataset, "this-host", worker_pid=gone_pid(), worker_started=1.0, worker_process="this-host:1")
    leftover = sleeper("-m", "engine.child", str(run.work_dir / "job.json"))
    TrainingRun.objects.filter(pk=run.pk).update(training_pid=leftover.pid, training_started=started_at(leftover.pid))
    try:
        assert training_runs_reconcile_host() == [run.pk]
        assert leftover.wait(timeout=5) == -9
        run.refresh_from_db()
        assert run.status == "failed" and "The worker process this-host:1 is gone" in run.error_message
        assert "retry it, or resume it" in run.error_message and run.finished_at
        assert training_runs_reconcile_host() == []
    finally:
        leftover.kill()


def test_a_reused_pid_is_not_taken_for_the_worker_or_the_child(make_dataset, settings):
    """The recorded worker and child pids now belong to an unrelated process: the run is failed (its worker is gone)
    and that process is left alone."""
    settings.DUMPSITE_HOST_ID = "this-host"
    dataset = make_dataset()
    stranger = sleeper()
    try:
        then = started_at(stranger.pid) - 3600  # what was recorded: a process of an hour ago under the same pid
        run = running_on(
            dataset,
            "this-host",
            worker_pid=stranger.pid,
            worker_started=then,
            training_pid=stranger.pid,
            training_started=then,
        )
        assert training_runs_reconcile_host() == [run.pk]
        assert stranger.poll() is None
        run.refresh_from_db()
        assert run.status == "failed"
    finally:
        stranger.kill()


def test_a_run_whose_worker_lives_or_is_on_another_host_is_left_running(make_dataset, settings):
    import os

    settings.DUMPSITE_HOST_ID = "this-host"
    dataset = make_dataset()
    me = running_on(dataset, "this-host", worker_pid=os.getpid(), worker_started=started_at(os.getpid()))
    elsewhere = running_on(dataset, "other-host", worker_pid=gone_pid(), worker_started=1.0)
    assert training_runs_reconcile_host() == []
    assert set(TrainingRun.objects.filter(pk__in=[me.pk, elsewhere.pk]).values_list("status", flat=True)) == {"running"}


def test_failing_a_gone_worker_is_conditional_on_that_worker(make_dataset):
    dataset = make_dataset()
    run = running_on(dataset, "this-host", worker_pid=12345, worker_started=1.0)
    TrainingRun.objects.filter(pk=run.pk).update(worker_pid=23456)  # claimed by another worker process meanwhile
    assert not training_run_fail_gone(run=run, message="gone")
    run.refresh_from_db()
    assert run.status == "running"
