"""What runs inside a django-q2 worker: the life of a claimed training run, as a sequence of named steps.

The tasks in ``tasks.py`` call this; every write goes through ``services.py``. The reaper of dead runs is in
``reaper.py``, the scratch space in ``scratch.py``, the phase timer in ``timings.py``.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

from django.conf import settings
from django.db import transaction

from datasets.coco_export import CocoExport, export_coco, manifest_of
from datasets.selectors import describe_image_paths
from datasets.splits import DEFAULT_CELL_M
from dumpsite.errors import ApplicationError

from .engine.config import checkpoint_epoch
from .engine.presets import get_preset
from .engine.supervisor import ChildResult, tail_text
from .models import TrainingManifest, TrainingRun
from .scratch import cleanup_work_dir, prepare_work_dir
from .services import (
    training_run_child_started,
    training_run_claim,
    training_run_fail,
    training_run_progress,
    training_run_record,
    training_run_succeed,
)
from .services.workers import current_worker, training_run_claim_next, training_runs_wake
from .timings import PhaseTimer

logger = logging.getLogger(__name__)
Status = TrainingRun.Status


def training_run_take(*, run_id: int | None = None) -> str:
    """What a django-q2 task does: take the run this worker cluster takes next (by priority and age, if it fits
    what the cluster has free: see ``services.workers``) and live it to its end. ``run_id`` is the run whose
    creation sent the task: which run is taken is the queue's decision. Returns what happened, for the task's
    result."""
    worker = current_worker()
    run = training_run_claim_next(worker=worker)
    if run is None:
        status = TrainingRun.objects.filter(pk=run_id).values_list("status", flat=True).first() if run_id else None
        logger.info("worker %s took no run now (run %s is %s)", worker.name, run_id, status)
        return f"nothing to take now (run {run_id}: {status})" if run_id else "nothing to take now"
    try:
        status = training_run_execute(run_id=run.pk)
    finally:
        # What this run held is free again: a run waiting for it (or for a worker) gets a take.
        if TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED).exists():
            training_runs_wake()
    return f"run {run.pk}: {status}"


def training_run_execute(*, run_id: int) -> str:
    """The whole life of a run this worker claimed (``training_run_take``), or of a queued one claimed here, out
    of the queue's order (a direct call). Returns the final status."""
    from .engine.events import read_events

    if TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED).exists() and not training_run_claim(run_id=run_id):
        logger.info("training run %s not claimed", run_id)
    run = TrainingRun.objects.select_related("dataset", "base_model", "retry_of", "evaluated_model").get(pk=run_id)
    if run.status != Status.RUNNING:
        logger.info("training run %s is %s; not executed", run_id, run.status)
        return run.status
    if run.kind == TrainingRun.Kind.EVALUATE:
        from .worker_evaluation import evaluation_execute

        return evaluation_execute(run)
    log_file = run.work_dir / "train.log"
    timings = PhaseTimer(run)
    try:
        export = export_dataset(run)
        timings.lap("export")
        job_file = write_job(run, export)
        timings.lap("config")
        result = train(run, job_file)
        events = read_events(run.work_dir / "events.jsonl")
        timings.child_exited(events)
        training_run_progress(run_id=run_id, state=result.state)
        ended = end_unless_trained(run, result)
        if ended is not None:
            return ended
        outcome = json.loads((run.work_dir / "result.json").read_text(encoding="utf-8"))
        register_and_succeed(run, outcome=outcome, history=metrics_history_of(run, events), log_tail=result.log_tail)
        timings.lap("registration")
        return Status.SUCCEEDED
    except ApplicationError as exc:
        return fail(run, message=str(exc), log_tail=tail_text(log_file))
    except Exception:  # noqa: BLE001 - a run must never stay 'running' after its worker gave up
        reference = secrets.token_hex(4)
        logger.exception("training run %s crashed in the worker (reference %s)", run_id, reference)
        return fail(
            run,
            message=(f"Internal error in the worker (reference {reference}); the server log has the details."),
            log_tail=tail_text(log_file),
        )
    finally:
        timings.save()


def export_dataset(run: TrainingRun) -> CocoExport:
    """Step 1: a fresh work dir, and the dataset exported to COCO in it, split by the run's strategy; what went to
    each side is recorded as the run's manifest."""
    work = prepare_work_dir(run)
    params = run.parameters
    export = export_coco(
        run.dataset,
        work / "data",
        val_fraction=params["val_fraction"],
        seed=params["seed"],
        strategy=params.get("split", "random"),
        cell_size_m=params.get("split_cell_m", DEFAULT_CELL_M),
    )
    training_run_record(run_id=run.pk, export_summary=export.as_dict())
    record_manifest(run, export)
    return export


def record_manifest(run: TrainingRun, export: CocoExport) -> None:
    train = json.loads(export.train_file.read_text(encoding="utf-8"))
    val = json.loads(export.val_file.read_text(encoding="utf-8"))
    manifest = manifest_of(train, val)
    TrainingManifest.objects.update_or_create(
        run=run,
        defaults={
            "split": manifest["split"],
            "train_image_ids": manifest["train"]["image_ids"],
            "train_box_ids": manifest["train"]["box_ids"],
            "val_image_ids": manifest["val"]["image_ids"],
            "val_box_ids": manifest["val"]["box_ids"],
            "train_hash": manifest["train"]["content_hash"],
            "val_hash": manifest["val"]["content_hash"],
            "validation_coco": val,
        },
    )


def write_job(run: TrainingRun, export: CocoExport) -> Path:
    """Step 2: the child's job file: the preset's base config and the run's overrides, as data."""
    from .engine.config import build_overrides
    from .engine.job import TrainingJob

    work = run.work_dir
    preset = get_preset(run.architecture)
    job = TrainingJob(
        base_config=preset.base_config,
        overrides=build_overrides(
            preset=preset,
            params=run.parameters,
            classes=export.classes,
            train_ann_file=str(export.train_file),
            val_ann_file=str(export.val_file),
            image_root=str(export.image_root),
            work_dir=str(work / "mmengine"),
            load_from=str(run.base_model.checkpoint.path) if run.base_model is not None else None,
            resume_from=run.resume_checkpoint or None,
        ),
        classes=export.classes,
        work_dir=str(work / "mmengine"),
        events_file=str(work / "events.jsonl"),
        result_file=str(work / "result.json"),
        output_dir=str(work / "output"),
        transfer=transfer_of(run),
        amp=bool(run.parameters.get("amp")),
        device=run.parameters.get("device", "cpu"),
        evaluation=thresholds_of(run),
    )
    job.write(work / "job.json")
    return work / "job.json"


def thresholds_of(run: TrainingRun) -> dict:
    return {
        "score_threshold": run.parameters.get("score_threshold", 0.3),
        "iou_threshold": run.parameters.get("iou_threshold", 0.5),
    }


def transfer_of(run: TrainingRun) -> dict | None:
    """How the child loads the base model (None: no base model, or a resumed attempt: its checkpoint is its own)."""
    if run.base_model is None or run.resume_checkpoint:
        return None
    return {
        "mode": run.weight_transfer.get("mode"),
        "reason": run.weight_transfer.get("reason", ""),
        "class_dependent": list(get_preset(run.architecture).class_dependent),
    }


def stop_reason_of(outcome: dict) -> str:
    trained, planned = outcome.get("epochs_trained"), outcome.get("max_epochs")
    if outcome.get("stopped_early"):
        return (
            f"Stopped early after epoch {trained} of {planned}: the validation mAP did not improve for "
            f"{outcome.get('patience', '?')} epochs (early stopping)."
        )
    return f"Trained all {planned} epochs." if planned else ""


def train(run: TrainingRun, job_file: Path) -> ChildResult:
    """Step 3: the training child, watched until it exits, is cancelled or runs out of time."""
    from .engine.supervisor import run_child

    return run_child(
        job_file=job_file,
        events_file=run.work_dir / "events.jsonl",
        log_file=run.work_dir / "train.log",
        on_progress=lambda state: training_run_progress(run_id=run.pk, state=state),
        on_start=lambda pid: training_run_child_started(run_id=run.pk, pid=pid),
        interval=settings.TRAINING_PROGRESS_INTERVAL,
        timeout=run.effective_time_limit,
        env=child_environment_of(run),
        processes=int(run.parameters.get("processes") or 1),
    )


def child_environment_of(run: TrainingRun) -> dict:
    """The child's environment: the basics and the site's additions, and what the worker gave the run (its GPUs,
    or none; thread counts for several processes)."""
    from .engine.supervisor import child_environment, resource_environment

    return resource_environment(
        child_environment(tuple(settings.TRAINING_CHILD_ENV)),
        device=run.parameters.get("device", "cpu"),
        gpus=run.assigned_gpus,
        processes=int(run.parameters.get("processes") or 1),
    )


def end_unless_trained(run: TrainingRun, result: ChildResult) -> str | None:
    """Step 4: a child that was stopped, ran out of time or failed ends the run here (its status returned);
    None when it trained to the end."""
    if result.stopped:  # cancelled meanwhile: the cancel already set the status
        cleanup_work_dir(run, keep_last_checkpoint=True)
        return TrainingRun.objects.values_list("status", flat=True).get(pk=run.pk)
    if result.timed_out:
        return fail(
            run,
            log_tail=result.log_tail,
            message=(f"The run exceeded its time limit of {run.effective_time_limit} s and was stopped."),
        )
    if result.returncode != 0:
        return fail(run, message=describe_image_paths(result.error or "training failed"), log_tail=result.log_tail)
    return None


def metrics_history_of(run: TrainingRun, events: list[dict]) -> list[dict]:
    """Step 5: per-epoch metrics. A resumed attempt continues the earlier one: that one's epochs up to the
    checkpoint it resumed from come first."""
    from .engine.events import metrics_history, read_events

    if run.resume_checkpoint and run.retry_of_id:
        upto = checkpoint_epoch(run.resume_checkpoint)
        events = [
            e for e in read_events(run.retry_of.work_dir / "events.jsonl") if (e.get("epoch") or 0) <= upto
        ] + events
    return metrics_history(events)


def register_and_succeed(run: TrainingRun, *, outcome: dict, history: list[dict], log_tail: str) -> None:
    """Step 6: register the model and mark the run succeeded in one transaction; stored artifacts go if it rolls
    back. Which epoch is registered is training's decision; the registry stores what it is given."""
    from models_registry.evaluations import evaluation_store_file
    from models_registry.models import Evaluation
    from models_registry.services import trained_model_delete_artifacts, trained_model_register_from_run

    from .engine.events import registered_epoch

    model = None
    try:
        with transaction.atomic():
            best = registered_epoch(history, outcome.get("checkpoint_epoch"))
            model = trained_model_register_from_run(run=run, result=outcome, history=history, best=best)
            if outcome.get("evaluation_file"):
                val_file = run.work_dir / "data" / "val.json"
                split = json.loads(val_file.read_text(encoding="utf-8"))["info"].get("split") or {}
                evaluation_store_file(
                    path=outcome["evaluation_file"],
                    gt_file=val_file,
                    model=model,
                    run=run,
                    dataset=run.dataset,
                    kind=Evaluation.Kind.VALIDATION,
                    split=f"validation split ({split.get('strategy', 'random')})",
                    split_details=split,
                )
            cleanup_work_dir(run)
            if not training_run_succeed(run_id=run.pk, log_tail=log_tail, stop_reason=stop_reason_of(outcome)):
                raise ApplicationError("The run stopped being 'running' before its model could be registered.")
    except BaseException:
        if model is not None:
            trained_model_delete_artifacts(model)
        raise


def fail(run: TrainingRun, *, message: str, log_tail: str) -> str:
    """Clean the scratch files first, so that a run seen as finished has nothing left in flight."""
    cleanup_work_dir(run, keep_last_checkpoint=True)
    training_run_fail(run_id=run.pk, message=message, log_tail=log_tail)
    return Status.FAILED
