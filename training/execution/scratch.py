"""A run's scratch space (``TrainingRun.work_dir``): the free-disk floor before a run starts, and what is removed
once it ends."""

from __future__ import annotations

import shutil

from django.conf import settings

from core.errors import ApplicationError

from ..models import TrainingRun
from ..selectors import last_checkpoint


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


def cleanup_work_dir(run: TrainingRun, *, keep_last_checkpoint: bool = False) -> None:
    """Remove bulky scratch files (checkpoints, copies already in the registry); keep the log, the events and the
    exported split (data/: which images were trained on and which held out) for later reading, and the last epoch
    checkpoint of a run that did not finish, so that it can be resumed."""
    work = run.work_dir
    if not work.exists() or settings.TRAINING_KEEP_SCRATCH:
        return
    keep = last_checkpoint(run) if keep_last_checkpoint else None
    for path in work.iterdir():
        if path.name in ("train.log", "events.jsonl", "job.json", "result.json", "data"):
            continue
        if keep is not None and path == keep.parent:
            for inner in path.iterdir():
                if inner != keep:
                    shutil.rmtree(inner, ignore_errors=True) if inner.is_dir() else inner.unlink(missing_ok=True)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
