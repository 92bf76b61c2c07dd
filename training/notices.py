"""What a run's end tells subscribers and its owner: ``run.succeeded`` / ``run.failed`` / ``run.cancelled`` for a
training run, ``evaluation.finished`` and ``detection.finished`` (with the run's status) for the other kinds; the
figures a user wants first (mAP50, epochs, duration, the error); written into the outbox in the transaction that
ended the run."""

from __future__ import annotations

from django.urls import reverse

from access.rules import visible
from core.formatting import duration
from models_registry.models import Evaluation, TrainedModel
from notifications.models import Event
from notifications.services import Notice, notice_emit

from .kinds import KINDS
from .models import TrainingRun

Kind, Status = TrainingRun.Kind, TrainingRun.Status
TRAIN_EVENTS: dict[str, str] = {
    Status.SUCCEEDED: Event.RUN_SUCCEEDED,
    Status.FAILED: Event.RUN_FAILED,
    Status.CANCELLED: Event.RUN_CANCELLED,
}
KIND_EVENTS = {Kind.EVALUATE: Event.EVALUATION_FINISHED, "detect": Event.DETECTION_FINISHED}
API_BASENAMES = {"detect": "detectionrun"}
PAGES = {"detect": "admin:detection_detectionrun_change"}


def run_visible(run_id: int):
    """May this user see run ``run_id``? (The runs' own rule, asked for each subscriber.)"""
    return lambda user: visible(user, "training.view_trainingrun", TrainingRun.objects.filter(pk=run_id)).exists()


def run_notice(run: TrainingRun) -> Notice:
    event = TRAIN_EVENTS[run.status] if run.kind == Kind.TRAIN else KIND_EVENTS[run.kind]
    what = {"train": "Training run", "evaluate": "Evaluation"}.get(run.kind, f"{run.kind.capitalize()} run")
    objects = {"run": (API_BASENAMES.get(run.kind, "trainingrun"), run.pk)}
    figures: dict[str, str] = {"status": run.status}
    data: dict = {"kind": run.kind, "name": run.name, "status": run.status}
    if run.duration_seconds is not None:
        figures["duration"] = duration(run.duration_seconds)
        data["duration_seconds"] = round(run.duration_seconds, 1)
    if run.kind == Kind.TRAIN:
        figures["epochs"] = f"{run.current_epoch} of {run.max_epochs}"
        data["epochs"] = run.current_epoch
        model = TrainedModel.objects.filter(source_run=run).only("pk", "bbox_mAP_50").first()
        if model is not None:
            objects["model"] = ("trainedmodel", model.pk)
            data["bbox_mAP_50"] = model.bbox_mAP_50
            if model.bbox_mAP_50 is not None:
                figures["mAP50"] = f"{model.bbox_mAP_50:.3f}"
    elif run.kind == Kind.EVALUATE:
        evaluation = Evaluation.objects.filter(run=run).only("pk", "metrics").first()
        if evaluation is not None:
            objects["evaluation"] = ("evaluation", evaluation.pk)
            data["metrics"] = evaluation.metrics
            if evaluation.metrics.get("bbox_mAP_50") is not None:
                figures["mAP50"] = f"{evaluation.metrics['bbox_mAP_50']:.3f}"
    kind = KINDS.get(run.kind)
    if kind is not None and kind.figures is not None:
        extra = kind.figures(run)
        figures.update(extra)
        data["figures"] = extra
    if run.status != Status.SUCCEEDED and run.error_message:
        figures["reason"] = run.error_message[:500]
        data["error"] = run.error_message[:2000]
    return Notice(
        event=event,
        title=f"{what} #{run.pk} {run.name!r} {run.status}",
        objects=objects,
        audience=run_visible(run.pk),
        data=data,
        figures=figures,
        page=reverse(PAGES.get(run.kind, "admin:training_trainingrun_change"), args=[run.pk]),
        owner=run.created_by,
    )


def run_ended(run_id: int) -> None:
    """Tell subscribers and the owner that run ``run_id`` ended; in the caller's transaction (the one that ended
    it), so that a rolled-back end tells nobody."""
    run = TrainingRun.objects.select_related("created_by").get(pk=run_id)
    if run.status in TrainingRun.FINISHED and (run.kind == Kind.TRAIN or run.kind in KIND_EVENTS):
        notice_emit(run_notice(run))  # atomic itself: a savepoint in the caller's transaction
