"""ONNX exports: a registered model written to ONNX and checked against itself on its own validation split (the
parity gate, ``engine.parity``), queued on the workers as a run of kind ``onnx_export``, so that progress, cancel,
time limit, the reaper and retry are those of every run. The file and the gate's report are the model's
(``TrainedModel.onnx``, ``onnx_report``).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from access.rules import Actor, require
from audit.services import audit_record
from core.errors import ApplicationError
from engine.presets import DEFAULT_PRESET, PRESETS
from models_registry.models import TrainedModel
from models_registry.selectors import models_visible_to

from ..models import TrainingManifest, TrainingRun
from .queueing import next_attempt, run_queue


def export_manifest(model: TrainedModel) -> TrainingManifest:
    """The training manifest holding the model's own validation split, which the gate checks the export on."""
    manifest = TrainingManifest.objects.filter(run_id=model.source_run_id).first() if model.source_run_id else None
    if manifest is None:
        raise ApplicationError(
            f"Model {model.name!r} has no validation split of its own (it was registered from files, or trained "
            "before runs recorded their split): the parity gate of an ONNX export needs one.",
            {"model": "no recorded validation split"},
        )
    if not (manifest.validation_coco or {}).get("images"):
        raise ApplicationError(
            f"Model {model.name!r}'s validation split is empty: the parity gate has nothing to check the export on.",
            {"model": "empty validation split"},
        )
    return manifest


@transaction.atomic
def onnx_export_create(
    *,
    model: TrainedModel,
    created_by: Actor = None,
    name: str = "",
    time_limit_seconds: int | None = None,
    priority: str | int | None = None,
    retry_of: TrainingRun | None = None,
    attempt: int = 1,
) -> TrainingRun:
    """Queue the ONNX export of ``model``. The user must be allowed to start runs and see the model; the model
    needs a checkpoint, a runnable config and its own validation split."""
    if created_by is not None:
        require(created_by, "training.add_trainingrun", message="You may not start runs.")
        if not models_visible_to(created_by).filter(pk=model.pk).exists():
            raise ApplicationError("No such model.", {"model": "no such model"})
    if not model.checkpoint or not model.config:
        raise ApplicationError(f"Model {model.name!r} has no checkpoint or config.", {"model": "no checkpoint"})
    manifest = export_manifest(model)
    return run_queue(
        kind=TrainingRun.Kind.ONNX_EXPORT,
        name=name,
        default_name=f"ONNX export of {model.name}",
        created_by=created_by,
        time_limit_seconds=time_limit_seconds,
        priority=priority,
        retry_of=retry_of,
        attempt=attempt,
        audit={"kind": "onnx_export", "model": model.pk},
        dataset_id=manifest.run.dataset_id,
        evaluated_model=model,
        architecture=model.architecture if model.architecture in PRESETS else DEFAULT_PRESET,
        parameters={"device": "cpu"},
        max_epochs=1,
    )


def onnx_export_again(*, run: TrainingRun, user: Any, resume: bool) -> TrainingRun:
    """An export has nothing to resume: it is exported and checked again (the user who asks must still see the
    model, and becomes its owner)."""
    if resume:
        raise ApplicationError(
            f"Run #{run.pk} is an ONNX export; it has no checkpoint to resume from. Retry it instead.",
            {"kind": "onnx_export"},
        )
    if run.evaluated_model is None:
        raise ApplicationError(f"Run #{run.pk} exported a model that was deleted since.", {"model": "deleted"})
    root = run.retry_of_root or run
    with transaction.atomic():
        attempt = next_attempt(run)
        new = onnx_export_create(
            model=run.evaluated_model,
            created_by=user,
            name=f"{root.name} (attempt {attempt})"[:200],
            time_limit_seconds=run.time_limit_seconds,
            retry_of=run,
            attempt=attempt,
        )
        audit_record(action="retried", obj=run, actor=user, new_run=new.pk)
    return new
