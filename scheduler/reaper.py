"""Dead workers, noticed two ways.

- On its own host, a worker's agent sees at once that a run's worker process is gone (``training_runs_reconcile_
  host``: at the cluster's start and every tick). A process is its pid *and* its start time, so a pid the kernel
  gave to another process is not taken for the worker.
- From any host, a run whose heartbeat is older than DUMPSITE_HEARTBEAT_LIMIT is failed (``training_runs_reap_
  stale``: every agent's tick, and a django-q2 schedule), which covers a host that died whole.

Either way the state change is one conditional UPDATE (exactly one outcome, whoever notices first), and leftover
training processes are killed only when the run was recorded on this host's identity (DUMPSITE_HOST_ID): a reaper
never signals a process of another host, whose pids mean nothing here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule

from core.mlflow_client import mlflow_enabled
from engine.processes import is_alive
from engine.supervisor import kill_training_process
from training.models import TrainingRun
from training.services import training_run_fail_gone, training_run_fail_stale
from workers.models import Worker

logger = logging.getLogger(__name__)
END_TRACKING_TASK = "scheduler.tasks.end_tracking"


def training_runs_reap_stale(*, limit_seconds: int | None = None) -> list[int]:
    """Mark running runs without a heartbeat for ``limit_seconds`` as failed; kill their training process when it
    still lives on this host. Returns the ids of the runs reaped."""
    limit = settings.TRAINING_HEARTBEAT_LIMIT if limit_seconds is None else limit_seconds
    cutoff = timezone.now() - timedelta(seconds=limit)
    reaped = []
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff):
        last = timezone.localtime(run.heartbeat_at).strftime("%Y-%m-%d %H:%M:%S %Z")
        message = (
            f"The worker stopped sending heartbeats (last one at {last}, limit {limit} s): it died or lost "
            f"the database. The run was marked failed; retry it to train again."
        )
        if not training_run_fail_stale(run=run, cutoff=cutoff, message=message):
            continue  # it heartbeated or ended meanwhile, or another reaper was first
        reaped.append(run.pk)
        if run.worker_host == settings.DUMPSITE_HOST_ID:
            _end_leftovers(run)
        tracking_end_enqueue(run)
        logger.warning("training run %s reaped: no heartbeat since %s", run.pk, last)
    return reaped


def training_runs_reconcile_host(*, host: str | None = None) -> list[int]:
    """Fail, at once, every running run recorded on this host whose worker process is gone (dead, or its pid now
    another process's), and end what is left of its training. Returns the ids of the runs failed."""

    runs = TrainingRun.objects.filter(
        status=TrainingRun.Status.RUNNING, worker_host=host or settings.DUMPSITE_HOST_ID, worker_pid__isnull=False
    )
    return _fail_gone(
        runs,
        lambda run: (
            f"The worker process {run.worker_process} is gone (it died or was killed while the run trained). The "
            "run was marked failed; retry it, or resume it from its last checkpoint."
        ),
        "its worker process is gone",
    )


def training_runs_end_stopped(*, worker: Worker, signal_name: str) -> list[int]:
    """Fail the running runs of ``worker``, a cluster of this host stopped on ``signal_name`` whose processes are
    gone, and end what is left of their training. Returns the ids of the runs failed."""

    return _fail_gone(
        TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, worker=worker),
        lambda run: (
            f"The worker was stopped ({signal_name}) while the run trained. The run was marked failed; retry it, "
            "or resume it from its last checkpoint."
        ),
        f"its worker was stopped ({signal_name})",
    )


def _fail_gone(runs, message_of: Callable[[TrainingRun], str], why: str) -> list[int]:
    """Fail each of ``runs`` whose worker process is no longer alive (one conditional UPDATE each: a run that ended
    or was failed by another agent meanwhile is left alone) and end what is left of its training."""
    failed = []
    for run in runs:
        if is_alive(run.worker_pid, run.worker_started):
            continue
        if not training_run_fail_gone(run=run, message=message_of(run)):
            continue  # it ended meanwhile, or another agent of this host was first
        failed.append(run.pk)
        _end_leftovers(run)
        tracking_end_enqueue(run)
        logger.warning("training run %s failed: %s (%s)", run.pk, why, run.worker_process)
    return failed


def _end_leftovers(run: TrainingRun) -> None:
    """Kill what is left of a run's training on this host: its child (if that pid is still the child: same start
    time and command line) and every process running its job."""

    pid = run.training_pid if is_alive(run.training_pid, run.training_started) else None
    if kill_training_process(pid, run.work_dir / "job.json"):
        logger.warning("killed the orphaned training processes of run %s (pid %s)", run.pk, run.training_pid)


def tracking_end_enqueue(run: TrainingRun) -> None:
    """A reaped run's MLflow run, which its dead training left RUNNING, is ended FAILED by a worker task: the
    tracking server may be slow or away, and the reaper runs in the agent's tick."""
    if run.mlflow_tracking.get("run_id") and mlflow_enabled():
        # django-q2's task module loads its cluster machinery: only when sending
        from django_q.tasks import async_task

        async_task(END_TRACKING_TASK, run.pk, "FAILED", task_name=f"training-run-{run.pk}-tracking", group="training")


def reaper_schedule_ensure() -> None:
    """The django-q2 schedule that runs the reaper (idempotent)."""

    Schedule.objects.update_or_create(
        name="reap stale training runs",
        defaults={
            "func": "scheduler.tasks.reap_stale_runs",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.TRAINING_REAPER_MINUTES,
            "repeats": -1,
        },
    )
