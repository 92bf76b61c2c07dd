"""The reaper: running runs whose worker stopped heartbeating are failed, and their orphaned training processes
are killed when the run was recorded on this host's identity (DUMPSITE_HOST_ID): a reaper never signals a process
of another host, whose pids mean nothing here. A django-q2 schedule runs it; the state change is the services'
``training_run_fail_stale``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import TrainingRun
from .services import training_run_fail_stale

logger = logging.getLogger(__name__)


def training_runs_reap_stale(*, limit_seconds: int | None = None) -> list[int]:
    """Mark running runs without a heartbeat for ``limit_seconds`` as failed; kill their training process when it
    still lives on this host. Returns the ids of the runs reaped."""
    from .engine.supervisor import kill_training_process

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
        if run.worker_host == settings.DUMPSITE_HOST_ID and kill_training_process(
            run.training_pid, run.work_dir / "job.json"
        ):
            logger.warning("killed the orphaned training processes of run %s (pid %s)", run.pk, run.training_pid)
        logger.warning("training run %s reaped: no heartbeat since %s", run.pk, last)
    return reaped


def reaper_schedule_ensure() -> None:
    """The django-q2 schedule that runs the reaper (idempotent)."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name="reap stale training runs",
        defaults={
            "func": "training.tasks.reap_stale_runs",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.TRAINING_REAPER_MINUTES,
            "repeats": -1,
        },
    )
