"""What runs inside a django-q2 worker: the life of a claimed training run (the reaper of dead runs is in
``reaper.py``).

The tasks in ``tasks.py`` call these; every state change goes through the transitions in ``services.py``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import time

from django.conf import settings
from django.db import transaction

from datasets.coco_export import export_coco
from datasets.models import DatasetImage
from dumpsite.errors import ApplicationError

from .engine.config import checkpoint_epoch
from .engine.presets import get_preset
from .models import TrainingRun
from .engine.supervisor import tail_text
from .selectors import last_checkpoint
from .services import training_run_claim, training_run_fail, training_run_progress, training_run_succeed

logger = logging.getLogger(__name__)
Status = TrainingRun.Status


_IMAGE_PATH = re.compile(r"(?:[^\s'\"]*/)?datasets/(\d+)/images/([0-9a-f]{64})\.[A-Za-z0-9]+")


def explain_image_paths(message: str) -> str:
    """Replace stored image paths in an error by the dataset image they are: what an operator can act on."""
    def describe(match: re.Match) -> str:
        image = DatasetImage.objects.filter(dataset_id=int(match.group(1)), sha256=match.group(2)).first()
        return f"image #{image.pk} {image.original_name!r}" if image else "an image file"

    return _IMAGE_PATH.sub(describe, message)


def _check_free_disk(path) -> None:
    free = shutil.disk_usage(path).free
    floor = getattr(settings, "TRAINING_MIN_FREE_BYTES", 0)
    if free < floor:
        raise ApplicationError(f"Only {free // 2**20} MiB free in the work area; a run needs {floor // 2**20} MiB.")


def _cleanup_work_dir(run: TrainingRun, *, keep_last_checkpoint: bool = False) -> None:
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


def training_run_execute(*, run_id: int) -> str:
    """The whole life of a claimed run, called by the django-q2 task. Returns the final status."""
    from .engine.config import build_overrides
    from .engine.events import metrics_history, read_events
    from .engine.job import TrainingJob
    from .engine.supervisor import child_environment, run_child

    if not training_run_claim(run_id=run_id):
        status = TrainingRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
        logger.info("training run %s not claimed (status %s)", run_id, status)
        return status or "missing"
    run = TrainingRun.objects.select_related("dataset", "base_model").get(pk=run_id)
    work = run.work_dir
    log_file = work / "train.log"
    timings = PhaseTimer(run)
    try:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        _check_free_disk(work)
        export = export_coco(run.dataset, work / "data", val_fraction=run.parameters["val_fraction"],
                             seed=run.parameters["seed"])
        TrainingRun.objects.filter(pk=run_id).update(export_summary=export.as_dict())
        timings.lap("export")
        preset = get_preset(run.architecture)
        load_from = None
        if run.base_model is not None:
            load_from = str(run.base_model.checkpoint.path)
        job = TrainingJob(
            base_config=preset.base_config,
            overrides=build_overrides(
                preset=preset, params=run.parameters, classes=export.classes,
                train_ann_file=str(export.train_file), val_ann_file=str(export.val_file),
                image_root=str(export.image_root), work_dir=str(work / "mmengine"), load_from=load_from,
                resume_from=run.resume_checkpoint or None),
            classes=export.classes, work_dir=str(work / "mmengine"), events_file=str(work / "events.jsonl"),
            result_file=str(work / "result.json"), output_dir=str(work / "output"),
        )
        job.write(work / "job.json")
        timings.lap("config")
        result = run_child(
            job_file=work / "job.json", events_file=work / "events.jsonl", log_file=log_file,
            on_progress=lambda state: training_run_progress(run_id=run_id, state=state),
            on_start=lambda pid: TrainingRun.objects.filter(pk=run_id).update(worker_pid=pid),
            interval=settings.TRAINING_PROGRESS_INTERVAL, timeout=run.effective_time_limit,
            env=child_environment(tuple(settings.TRAINING_CHILD_ENV)),
        )
        events = read_events(work / "events.jsonl")
        timings.child_exited(events)
        training_run_progress(run_id=run_id, state=result.state)
        if result.stopped:
            _cleanup_work_dir(run, keep_last_checkpoint=True)
            return TrainingRun.objects.get(pk=run_id).status
        if result.timed_out:
            return _fail(run, log_tail=result.log_tail, message=(
                f"The run exceeded its time limit of {run.effective_time_limit} s and was stopped."))
        if result.returncode != 0:
            return _fail(run, message=explain_image_paths(result.error or "training failed"),
                         log_tail=result.log_tail)
        outcome = json.loads((work / "result.json").read_text(encoding="utf-8"))
        if run.resume_checkpoint and run.retry_of_id:
            # The resumed attempt continues the earlier one: its epochs up to the checkpoint come first.
            upto = checkpoint_epoch(run.resume_checkpoint)
            events = [e for e in read_events(run.retry_of.work_dir / "events.jsonl")
                      if (e.get("epoch") or 0) <= upto] + events
        history = metrics_history(events)
        _register_and_succeed(run, outcome=outcome, history=history, log_tail=result.log_tail)
        timings.lap("registration")
        return Status.SUCCEEDED
    except ApplicationError as exc:
        return _fail(run, message=str(exc), log_tail=tail_text(log_file))
    except Exception:  # noqa: BLE001 - a run must never stay 'running' after its worker gave up
        reference = secrets.token_hex(4)
        logger.exception("training run %s crashed in the worker (reference %s)", run_id, reference)
        return _fail(run, message=(f"Internal error in the worker (reference {reference}); the server log has "
                                   f"the details."), log_tail=tail_text(log_file))
    finally:
        timings.save()


class PhaseTimer:
    """Where a run's wall time went, stored on the run by phase (``TrainingRun.PHASES``)."""

    def __init__(self, run: TrainingRun):
        self.run_id = run.pk
        self.phases = {"queued": round((run.started_at - run.created_at).total_seconds(), 3)}
        self._last = run.started_at.timestamp()  # the claim: phases follow one another without gaps

    def lap(self, phase: str) -> None:
        now = time.time()
        self.phases[phase] = round(now - self._last, 3)
        self._last = now

    def child_exited(self, events: list[dict]) -> None:
        """Split the child's life at its first progress event: before it, process start, imports and the loading
        of model and data; after it, training proper."""
        first = next((e["time"] for e in events if e.get("event") == "start"), None)
        if first is not None and self._last <= first <= time.time():
            self.phases["startup"] = round(first - self._last, 3)
            self._last = first
            self.lap("training")
        else:
            self.lap("startup")

    def save(self) -> None:
        TrainingRun.objects.filter(pk=self.run_id).update(timings=self.phases)


def _fail(run: TrainingRun, *, message: str, log_tail: str) -> str:
    """Clean the scratch files first, so that a run seen as finished has nothing left in flight."""
    _cleanup_work_dir(run, keep_last_checkpoint=True)
    training_run_fail(run_id=run.pk, message=message, log_tail=log_tail)
    return Status.FAILED


def _register_and_succeed(run: TrainingRun, *, outcome: dict, history: list[dict], log_tail: str) -> None:
    """Register the model and mark the run succeeded in one transaction; stored artifacts go if it rolls back."""
    from models_registry.services import trained_model_delete_artifacts, trained_model_register_from_run

    model = None
    try:
        with transaction.atomic():
            model = trained_model_register_from_run(run=run, result=outcome, history=history)
            _cleanup_work_dir(run)
            if not training_run_succeed(run_id=run.pk, log_tail=log_tail):
                raise ApplicationError("The run stopped being 'running' before its model could be registered.")
    except BaseException:
        if model is not None:
            trained_model_delete_artifacts(model)
        raise
