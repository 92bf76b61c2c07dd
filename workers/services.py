"""The registry of worker clusters: a cluster registers what it declared under its host identity, heartbeats, and
stops; a django-q2 process finds the cluster it belongs to."""

from __future__ import annotations

import os
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import Worker
from .resources import declared_capacity

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
            "address": settings.DUMPSITE_HOST_ADDRESS,
            "gpus": list(capacity.gpus),
            "cpu_slots": capacity.cpu_slots,
            "processes": max(1, processes),
            "heartbeat_at": now,
            "stopped_at": None,
        },
    )
    return worker


def worker_heartbeat(worker: Worker, *, gpu_memory: list[dict] | None = None) -> None:
    """The cluster is alive (and, when given, what its GPUs hold now)."""
    fields = {} if gpu_memory is None else {"gpu_memory": gpu_memory}
    Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now(), stopped_at=None, **fields)


def worker_stop(worker: Worker) -> None:
    Worker.objects.filter(pk=worker.pk).update(stopped_at=timezone.now())


def current_worker() -> Worker:
    """The cluster this django-q2 process belongs to: the one ``manage.py worker`` registered (its id is in the
    environment), or, under a plain ``manage.py qcluster``, one registered now for its sentinel process."""
    # django-q2 sets up its cluster configuration on import: only where it is used
    from django_q.conf import Conf

    worker_id = os.environ.get(WORKER_ID_ENV)
    if worker_id:
        worker = Worker.objects.filter(pk=int(worker_id)).first()
        if worker is not None:
            return worker
    return worker_register(pid=os.getppid(), processes=int(Conf.WORKERS or 1))
