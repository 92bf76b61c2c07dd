"""A run's scratch space on its worker's own disk (``TrainingRun.work_dir``): the free-disk floor before a run starts,
and its removal once the run has ended."""

from __future__ import annotations

import shutil

from django.conf import settings

from core.errors import ApplicationError
from core.host_cache import prune_host_cache

from ..models import TrainingRun


def prepare_work_dir(run: TrainingRun):
    """An empty work dir for the run (an earlier attempt of the same id leaves nothing), on a disk with room."""
    work = run.work_dir
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    check_free_disk(work)
    return work


def check_free_disk(path) -> None:
    free = shutil.disk_usage(path).free
    floor = getattr(settings, "TRAINING_MIN_FREE_BYTES", 0)
    if free < floor:
        raise ApplicationError(f"Only {free // 2**20} MiB free in the work area; a run needs {floor // 2**20} MiB.")


def cleanup_work_dir(run: TrainingRun) -> None:
    """Remove the run's scratch folder once it has ended: what is kept of a run (its log, events and result, the last
    checkpoint of a run that may be resumed) was pushed to the storage by then (``training.run_files``), and a
    worker's disk keeps nothing of a run that ended. TRAINING_KEEP_SCRATCH keeps it all, for debugging. The host's
    picture cache is pruned back to its bound."""
    if not settings.TRAINING_KEEP_SCRATCH:
        shutil.rmtree(run.work_dir, ignore_errors=True)
    prune_host_cache()  # the pictures this run fetched count as used now: older ones go first
