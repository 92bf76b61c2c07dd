"""Writes to training runs. One function per state transition; every rule is checked here.

States: queued -> running -> succeeded | failed | cancelled; queued -> cancelled.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import traceback
from pathlib import Path
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from datasets.coco_export import export_coco
from datasets.models import Dataset, DatasetImage
from datasets.selectors import dataset_assert_trainable
from audit.services import audit_record
from dumpsite.access import can, grant
from dumpsite.errors import ApplicationError
from dumpsite.roles import CREATOR_PERMS
from models_registry.models import TrainedModel

from .engine.params import ParamError, validate_params
from .engine.presets import DEFAULT_PRESET, PRESETS, get_preset
from .models import TrainingRun

logger = logging.getLogger(__name__)
Status = TrainingRun.Status
TASK = "training.tasks.execute_training_run"


def _check_base_model(base_model: TrainedModel, *, architecture: str, classes: list[str]) -> None:
    """Fine-tuning loads the base model's whole state (backbone, neck and head): its classes must match exactly.

    A head for other classes would be silently wrong (same shapes, other meaning) or would not load at all, so a
    mismatch is refused rather than papered over.
    """
    if base_model.architecture != architecture:
        raise ApplicationError(
            f"Base model {base_model.name!r} is a {base_model.architecture} model; this run trains {architecture}.",
            {"base_model": "architecture differs"})
    if list(base_model.class_names) != list(classes):
        raise ApplicationError(
            f"Base model {base_model.name!r} predicts {base_model.class_names!r}, but the dataset's classes are "
            f"{classes!r}. Fine-tuning needs the same classes in the same order.",
            {"base_model": "classes differ"})
    if not base_model.checkpoint:
        raise ApplicationError(f"Base model {base_model.name!r} has no checkpoint.", {"base_model": "no checkpoint"})


def training_run_validate(*, dataset: Dataset, architecture: str, base_model: TrainedModel | None,
                          parameters: dict | None) -> dict:
    """Everything a run needs, checked before anything is saved. Returns the complete parameters."""
    if architecture not in PRESETS:
        raise ApplicationError(f"Unknown architecture {architecture!r}.",
                               {"architecture": f"choose one of {', '.join(PRESETS)}"})
    if parameters is not None and not isinstance(parameters, dict):
        raise ApplicationError("Parameters must be an object of name: value.", {"parameters": "not an object"})
    try:
        params = validate_params(architecture, parameters)
    except ParamError as exc:
        raise ApplicationError("Invalid training parameters.", exc.errors) from exc
    dataset_assert_trainable(dataset)
    if base_model is not None:
        _check_base_model(base_model, architecture=architecture, classes=dataset.class_names())
    return params


def _check_user_may_train(user, *, dataset: Dataset, base_model: TrainedModel | None) -> None:
    if user is None:  # operators on the command line without --user
        return
    if not can(user, "training.add_trainingrun"):
        raise PermissionDenied("You may not start training runs.")
    if not can(user, "datasets.use_dataset", dataset):
        raise PermissionDenied(f"You may not train on dataset {dataset.name!r}.")
    if base_model is not None and not (
            can(user, "models_registry.view_trainedmodel", base_model)
            or (base_model.is_published and can(user, "models_registry.view_published_trainedmodel"))):
        raise PermissionDenied("You may not use that base model.")


@transaction.atomic
def training_run_create(*, dataset: Dataset, architecture: str | None = None, base_model: TrainedModel | None = None,
                        parameters: dict | None = None, name: str = "", created_by=None,
                        retry_of: TrainingRun | None = None, time_limit_seconds: int | None = None) -> TrainingRun:
    """Validate and queue a run. ``created_by`` (when given) must be allowed to train on the dataset and to use the
    base model; the creator gets the run's object permissions."""
    _check_user_may_train(created_by, dataset=dataset, base_model=base_model)
    if architecture is None:
        architecture = base_model.architecture if base_model else DEFAULT_PRESET
    params = training_run_validate(dataset=dataset, architecture=architecture, base_model=base_model,
                                   parameters=parameters)
    if time_limit_seconds is not None and (
            isinstance(time_limit_seconds, bool) or not isinstance(time_limit_seconds, int)
            or not 1 <= time_limit_seconds <= settings.TRAINING_RUN_TIMEOUT):
        raise ApplicationError("Invalid time limit.", {
            "time_limit_seconds": f"a whole number of seconds from 1 to {settings.TRAINING_RUN_TIMEOUT}"})
    name = (name or "").strip() or f"{dataset.name} / {architecture}"
    if len(name) > 200:
        raise ApplicationError("The run name is too long.", {"name": "at most 200 characters"})
    run = TrainingRun.objects.create(name=name, dataset=dataset, architecture=architecture, base_model=base_model,
                                     parameters=params, max_epochs=params["epochs"], created_by=created_by,
                                     retry_of=retry_of, time_limit_seconds=time_limit_seconds)
    grant(created_by, CREATOR_PERMS["trainingrun"], run)
    audit_record(action="created", obj=run, actor=created_by, dataset=dataset.pk, architecture=architecture,
                 base_model=base_model.pk if base_model else None, retry_of=retry_of.pk if retry_of else None)
    transaction.on_commit(lambda: training_run_enqueue(run_id=run.pk))
    return run


def training_run_cancel(*, run: TrainingRun, user=None) -> TrainingRun:
    """queued -> cancelled at once; running -> cancelled, and the worker stops the training process group at its
    next progress tick (about a second). Finished runs are refused."""
    now = timezone.now()
    updated = TrainingRun.objects.filter(pk=run.pk, status__in=[Status.QUEUED, Status.RUNNING]).update(
        status=Status.CANCELLED, finished_at=now, error_message=f"Cancelled by {_who(user)}.")
    run.refresh_from_db()
    if not updated:
        raise ApplicationError(f"Run #{run.pk} is {run.status}; only queued or running runs can be cancelled.",
                               {"status": run.status})
    audit_record(action="cancelled", obj=run, actor=user)
    return run


def training_run_retry(*, run: TrainingRun, user=None) -> TrainingRun:
    """A new queued attempt with the same dataset, base model and parameters, linked to the one it retries."""
    if run.status not in (Status.FAILED, Status.CANCELLED):
        raise ApplicationError(f"Run #{run.pk} is {run.status}; only failed or cancelled runs can be retried.",
                               {"status": run.status})
    attempt = run.retries.count() + 2
    base_name = run.name.split(" (attempt ")[0]
    with transaction.atomic():
        new = training_run_create(dataset=run.dataset, architecture=run.architecture, base_model=run.base_model,
                                  parameters=dict(run.parameters), name=f"{base_name} (attempt {attempt})"[:200],
                                  created_by=user if user is not None else run.created_by, retry_of=run,
                                  time_limit_seconds=run.time_limit_seconds)
        audit_record(action="retried", obj=run, actor=user, new_run=new.pk)
    return new


def training_run_resume(*, run: TrainingRun, user=None) -> TrainingRun:
    """A new attempt that continues a failed or cancelled run from its last epoch checkpoint (weights, optimizer,
    learning-rate schedule and epoch), linked to it."""
    if run.status not in (Status.FAILED, Status.CANCELLED):
        raise ApplicationError(f"Run #{run.pk} is {run.status}; only failed or cancelled runs can be resumed.",
                               {"status": run.status})
    checkpoint = last_checkpoint(run)
    if checkpoint is None:
        raise ApplicationError(f"Run #{run.pk} kept no checkpoint (it stopped before its first epoch ended); "
                               f"retry it instead.", {"checkpoint": "none"})
    base_name = run.name.split(" (attempt ")[0].split(" (resumed")[0]
    with transaction.atomic():
        new = training_run_create(dataset=run.dataset, architecture=run.architecture, base_model=run.base_model,
                                  parameters=dict(run.parameters), name=f"{base_name} (resumed)"[:200],
                                  created_by=user if user is not None else run.created_by, retry_of=run,
                                  time_limit_seconds=run.time_limit_seconds)
        new.resume_checkpoint = str(checkpoint)
        new.save(update_fields=["resume_checkpoint"])
        audit_record(action="resumed", obj=run, actor=user, new_run=new.pk, checkpoint=checkpoint.name)
    return new


def training_run_delete(*, run: TrainingRun, user=None) -> None:
    """Delete a finished run and, after the commit, its scratch files. Its model, if any, stays registered."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if not run.is_finished:
            raise ApplicationError(f"Run #{run.pk} is {run.status}; cancel it before deleting it.",
                                   {"status": run.status})
        work = run.work_dir
        audit_record(action="deleted", obj=run, actor=user)
        run.delete()
        transaction.on_commit(lambda: shutil.rmtree(work, ignore_errors=True))


def training_runs_reap_stale(*, limit_seconds: int | None = None) -> list[int]:
    """Mark running runs without a heartbeat for ``limit_seconds`` as failed; kill their training process when it
    still lives on this host. Returns the ids of the runs reaped."""
    from .engine.supervisor import kill_training_process

    limit = settings.TRAINING_HEARTBEAT_LIMIT if limit_seconds is None else limit_seconds
    now = timezone.now()
    cutoff = now - timedelta(seconds=limit)
    reaped = []
    for run in TrainingRun.objects.filter(status=Status.RUNNING, heartbeat_at__lt=cutoff):
        last = timezone.localtime(run.heartbeat_at).strftime("%Y-%m-%d %H:%M:%S %Z")
        message = (f"The worker stopped sending heartbeats (last one at {last}, limit {limit} s): it died or lost "
                   f"the database. The run was marked failed; retry it to train again.")
        updated = TrainingRun.objects.filter(pk=run.pk, status=Status.RUNNING, heartbeat_at__lt=cutoff).update(
            status=Status.FAILED, finished_at=now, worker_pid=None, error_message=message)
        if not updated:
            continue
        audit_record(action="failed", obj=run, reason=message, reaped=True)
        reaped.append(run.pk)
        if run.worker_pid and run.worker_host == socket.gethostname():
            if kill_training_process(run.worker_pid, run.work_dir / "job.json"):
                logger.warning("killed the orphaned training process %s of run %s", run.worker_pid, run.pk)
        logger.warning("training run %s reaped: no heartbeat since %s", run.pk, last)
    return reaped


def reaper_schedule_ensure() -> None:
    """The django-q2 schedule that runs the reaper (idempotent)."""
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name="reap stale training runs",
        defaults={"func": "training.tasks.reap_stale_runs", "schedule_type": Schedule.MINUTES,
                  "minutes": settings.TRAINING_REAPER_MINUTES, "repeats": -1})


def _who(user) -> str:
    return getattr(user, "username", None) or "an operator"


def training_run_enqueue(*, run_id: int) -> str:
    from django_q.tasks import async_task

    return async_task(TASK, run_id, task_name=f"training-run-{run_id}", group="training")


def training_run_claim(*, run_id: int) -> bool:
    """queued -> running, as one conditional UPDATE: of several workers handed the same run, one wins."""
    now = timezone.now()
    host = socket.gethostname()[:255]
    claimed = TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
        status=Status.RUNNING, started_at=now, heartbeat_at=now, worker_host=host,
        worker_process=f"{host}:{os.getpid()}",
    ) == 1
    if claimed:
        audit_record(action="started", obj=TrainingRun.objects.only("name").get(pk=run_id),
                     worker=f"{host}:{os.getpid()}")
    return claimed


def training_run_progress(*, run_id: int, state: dict) -> bool:
    """Store live progress (and the heartbeat). Returns False once the run is no longer running."""
    fields = {"heartbeat_at": timezone.now()}
    if state.get("max_iters"):
        fields.update(max_iters=state["max_iters"], progress_percent=min(100.0, state.get("percent") or 0.0))
    if state.get("max_epochs"):
        fields["max_epochs"] = state["max_epochs"]
    if state.get("iter") is not None:
        fields.update(current_iter=state["iter"], current_epoch=state.get("epoch") or 0,
                      latest_losses=state.get("losses") or {}, learning_rate=state.get("lr"),
                      eta_seconds=state.get("eta"))
    return TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(**fields) == 1


def _finish(run_id: int, status: str, **fields) -> bool:
    finished = TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(
        status=status, finished_at=timezone.now(), heartbeat_at=timezone.now(), worker_pid=None, **fields) == 1
    if finished:
        audit_record(action=str(status), obj=TrainingRun.objects.only("name").get(pk=run_id),
                     **({"reason": fields["error_message"][:500]} if fields.get("error_message") else {}))
    return finished


def training_run_fail(*, run_id: int, message: str, log_tail: str = "") -> bool:
    logger.warning("training run %s failed: %s", run_id, message)
    return _finish(run_id, Status.FAILED, error_message=message[:10_000], log_tail=log_tail[-20_000:])


def training_run_succeed(*, run_id: int, log_tail: str = "") -> bool:
    return _finish(run_id, Status.SUCCEEDED, progress_percent=100.0, eta_seconds=0.0, log_tail=log_tail[-20_000:])


def last_checkpoint(run: TrainingRun):
    """The newest epoch checkpoint a failed or cancelled run kept (for resuming), or None."""
    candidates = list((run.work_dir / "mmengine").glob("epoch_*.pth"))
    return max(candidates, key=lambda p: int(p.stem.split("_")[1])) if candidates else None


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
    from .engine.supervisor import run_child

    if not training_run_claim(run_id=run_id):
        status = TrainingRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
        logger.info("training run %s not claimed (status %s)", run_id, status)
        return status or "missing"
    run = TrainingRun.objects.select_related("dataset", "base_model").get(pk=run_id)
    work = run.work_dir
    log_file = work / "train.log"
    try:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        _check_free_disk(work)
        export = export_coco(run.dataset, work / "data", val_fraction=run.parameters["val_fraction"],
                             seed=run.parameters["seed"])
        TrainingRun.objects.filter(pk=run_id).update(export_summary=export.as_dict())
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
        result = run_child(
            job_file=work / "job.json", events_file=work / "events.jsonl", log_file=log_file,
            on_progress=lambda state: training_run_progress(run_id=run_id, state=state),
            on_start=lambda pid: TrainingRun.objects.filter(pk=run_id).update(worker_pid=pid),
            interval=settings.TRAINING_PROGRESS_INTERVAL, timeout=run.effective_time_limit,
        )
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
        events = read_events(work / "events.jsonl")
        if run.resume_checkpoint and run.retry_of_id:
            # The resumed attempt continues the earlier one: its epochs up to the checkpoint come first.
            upto = int(Path(run.resume_checkpoint).stem.split("_")[1])
            events = [e for e in read_events(run.retry_of.work_dir / "events.jsonl")
                      if (e.get("epoch") or 0) <= upto] + events
        history = metrics_history(events)
        _register_and_succeed(run, outcome=outcome, history=history, log_tail=result.log_tail)
        return Status.SUCCEEDED
    except ApplicationError as exc:
        return _fail(run, message=str(exc), log_tail=_tail(log_file))
    except Exception as exc:  # noqa: BLE001 - a run must never stay 'running' after its worker gave up
        logger.exception("training run %s crashed in the worker", run_id)
        return _fail(run, message=f"Internal error in the worker: {type(exc).__name__}: {exc}",
                     log_tail=(_tail(log_file) + "\n" + traceback.format_exc()).strip())


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


_IMAGE_PATH = re.compile(r"(?:[^\s'\"]*/)?datasets/(\d+)/images/([0-9a-f]{64})\.[A-Za-z0-9]+")


def explain_image_paths(message: str) -> str:
    """Replace stored image paths in an error by the dataset image they are: what an operator can act on."""
    def describe(match: re.Match) -> str:
        image = DatasetImage.objects.filter(dataset_id=int(match.group(1)), sha256=match.group(2)).first()
        return f"image #{image.pk} {image.original_name!r}" if image else "an image file"

    return _IMAGE_PATH.sub(describe, message)


def _tail(log_file) -> str:
    from .engine.supervisor import tail_text

    return tail_text(log_file)


def _check_free_disk(path) -> None:
    free = shutil.disk_usage(path).free
    floor = getattr(settings, "TRAINING_MIN_FREE_BYTES", 0)
    if free < floor:
        raise ApplicationError(f"Only {free // 2**20} MiB free in the work area; a run needs {floor // 2**20} MiB.")
