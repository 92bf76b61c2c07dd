"""Worker clusters and the queue: a cluster registers what it has, heartbeats, and takes the next run that fits it.

Queue order: priority (high first), then first come first served. A worker takes the first queued run it could
ever take; when that one does not fit what it has free now (a 2-GPU run while one of its GPUs is busy), it takes
nothing and the run waits for the resources, rather than being overtaken by smaller runs for ever.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import TrainingRun, Worker
from ..resources import capacity_of, declared_capacity, free_capacity, need_of
from .execution import training_run_claim

logger = logging.getLogger(__name__)
Status = TrainingRun.Status
TAKE_TASK = "training.tasks.take_training_run"
WORKER_ID_ENV = "DUMPSITE_WORKER_ID"


def worker_register(*, pid: int | None = None, processes: int = 1) -> Worker:
    """A worker cluster starting on this host: its declared resources, under its host identity and pid."""
    pid = pid or os.getpid()
    capacity = declared_capacity()
    now = timezone.now()
    # Workers unseen for longer than the site remembers go (their runs keep the host and process they recorded).
    Worker.objects.filter(heartbeat_at__lt=now - timedelta(seconds=settings.TRAINING_WORKER_FORGET)).delete()
    worker, _ = Worker.objects.update_or_create(
        name=f"{settings.DUMPSITE_HOST_ID}:{pid}"[:300],
        defaults={
            "host": settings.DUMPSITE_HOST_ID,
            "pid": pid,
            "gpus": list(capacity.gpus),
            "cpu_slots": capacity.cpu_slots,
            "processes": max(1, processes),
            "heartbeat_at": now,
            "stopped_at": None,
        },
    )
    return worker


def worker_heartbeat(worker: Worker) -> None:
    Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now(), stopped_at=None)


def worker_stop(worker: Worker) -> None:
    Worker.objects.filter(pk=worker.pk).update(stopped_at=timezone.now())


def current_worker() -> Worker:
    """The cluster this django-q2 process belongs to: the one ``manage.py worker`` registered (its id is in the
    environment), or, under a plain ``manage.py qcluster``, one registered now for its sentinel process."""
    from django_q.conf import Conf

    worker_id = os.environ.get(WORKER_ID_ENV)
    if worker_id:
        worker = Worker.objects.filter(pk=int(worker_id)).first()
        if worker is not None:
            return worker
    return worker_register(pid=os.getppid(), processes=int(Conf.WORKERS or 1))


def queue_order():
    return TrainingRun.objects.filter(status=Status.QUEUED).order_by("-priority", "created_at", "id")


def next_run_for(worker: Worker, free=None) -> tuple[TrainingRun | None, list[str]]:
    """The run ``worker`` takes next and the GPUs it gets, or (None, []) when it takes nothing now: the first
    queued run it could ever take, if it fits what is free."""
    capacity = capacity_of(worker)
    free = free_capacity(worker) if free is None else free
    for run in queue_order().only("id", "parameters", "priority", "created_at"):
        need = need_of(run.parameters)
        if not capacity.can_ever(need):
            continue  # another worker's run
        gpus = free.take(need)
        return (run, gpus) if gpus is not None else (None, [])
    return None, []


def training_run_claim_next(*, worker: Worker) -> TrainingRun | None:
    """Claim the run ``worker`` takes next, with its GPUs. The worker's row is locked meanwhile, so that two
    processes of one cluster never count the same free GPU twice; the claim itself is the conditional UPDATE
    of ``training_run_claim`` (of several clusters, one wins; the loser looks again)."""
    for _ in range(10):
        with transaction.atomic():
            worker = Worker.objects.select_for_update().get(pk=worker.pk)
            run, gpus = next_run_for(worker)
            if run is None:
                return None
            if training_run_claim(run_id=run.pk, worker=worker, gpus=gpus):
                return TrainingRun.objects.get(pk=run.pk)
    return None


def idle_processes(worker: Worker) -> int:
    busy = TrainingRun.objects.filter(worker=worker, status=Status.RUNNING).count()
    return max(0, worker.processes - busy)


def training_runs_offer(worker: Worker, *, waited: float, skip: set[int] = frozenset()) -> int | None:
    """The agent's part: when ``worker`` has an idle process and the run it would take next has waited ``waited``
    seconds (its own task went to a cluster that could not take it), ask the queue for a take, unless that run is
    in ``skip`` (asked for lately). Returns the run's id when it asked."""
    if idle_processes(worker) == 0:
        return None
    run, _ = next_run_for(worker)
    if run is None or run.pk in skip or (timezone.now() - run.created_at).total_seconds() < waited:
        return None
    training_runs_wake()
    return run.pk


def training_runs_wake() -> None:
    """A task that makes whichever worker gets it take the next run that fits it (if any)."""
    from django_q.tasks import async_task

    async_task(TAKE_TASK, task_name="training-take", group="training")
