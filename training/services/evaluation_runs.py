"""Evaluation runs: a registered model over a dataset (all of it, a validation split made now, or the model's own
validation split from its training manifest), queued on the training workers as a run of kind ``evaluate``, so
that progress, cancel, time limit, the heartbeat reaper and retry are those of training runs.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from access.rules import Actor, require, visible
from audit.services import audit_record
from core.errors import ApplicationError
from datasets.models import Dataset
from engine.params import COMMON_DEFAULTS, PARAM_SPECS, ParamError, validate_params
from engine.presets import DEFAULT_PRESET, PRESETS
from models_registry.models import TrainedModel
from models_registry.selectors import models_visible_to
from workers.resources import assert_some_worker_can_take

from ..models import TrainingManifest, TrainingRun
from .queueing import next_attempt, run_queue, with_site_defaults

SPLITS = {
    "all": "every enabled image of the dataset",
    "validation": "the validation side of a split made now (split, val_fraction, seed, split_cell_m)",
    "model": "the model's own validation split, as its training run recorded it (its manifest)",
}
# The parameters an evaluation takes; the rest of a run's parameters are training's.
EVALUATION_PARAMS = (
    "split",
    "split_cell_m",
    "val_fraction",
    "seed",
    "score_threshold",
    "iou_threshold",
    "batch_size",
    "device",
)


def evaluation_parameters(architecture: str, given: dict | None) -> dict:
    """The complete, checked parameters of an evaluation (the same ranges as a training run's)."""
    given = dict(given or {})
    unknown = [k for k in given if k not in EVALUATION_PARAMS]
    if unknown:
        raise ApplicationError(
            "Invalid evaluation parameters.",
            {k: f"not a parameter of an evaluation; known: {', '.join(EVALUATION_PARAMS)}" for k in unknown},
        )
    try:
        params = validate_params(architecture if architecture in PRESETS else DEFAULT_PRESET, with_site_defaults(given))
    except ParamError as exc:
        raise ApplicationError("Invalid evaluation parameters.", exc.errors) from exc
    params = {k: params.get(k, COMMON_DEFAULTS.get(k)) for k in EVALUATION_PARAMS if k in PARAM_SPECS}
    assert_some_worker_can_take(params)  # an evaluation is one process
    return params


def _manifest_of(model: TrainedModel) -> TrainingManifest:
    manifest = TrainingManifest.objects.filter(run_id=model.source_run_id).first() if model.source_run_id else None
    if manifest is None:
        raise ApplicationError(
            f"Model {model.name!r} has no training manifest (it was registered from files, or trained before runs "
            "recorded their split); evaluate it on a dataset instead.",
            {"split": "the model has no recorded validation split"},
        )
    return manifest


@transaction.atomic
def evaluation_run_create(
    *,
    model: TrainedModel,
    dataset: Dataset | None,
    split: str = "all",
    parameters: dict | None = None,
    name: str = "",
    created_by: Actor = None,
    time_limit_seconds: int | None = None,
    retry_of: TrainingRun | None = None,
    attempt: int = 1,
    priority: str | int | None = None,
) -> TrainingRun:
    """Queue an evaluation of ``model``. The user must be allowed to start runs, see the model and see the
    dataset (and for ``priority`` "high", to prioritize runs); the model and the dataset must share at least one
    class (matched by name)."""
    if created_by is not None:
        require(created_by, "training.add_trainingrun", message="You may not start runs.")
        if not models_visible_to(created_by).filter(pk=model.pk).exists():
            raise ApplicationError("No such model.", {"model": "no such model"})
    if split not in SPLITS:
        raise ApplicationError(
            f"Unknown split {split!r}.", {"split": "; ".join(f"{k}: {v}" for k, v in SPLITS.items())}
        )
    if split == "model":
        manifest = _manifest_of(model)
        if dataset is not None and dataset.pk != manifest.run.dataset_id:
            raise ApplicationError(
                "A model's own validation split belongs to the dataset it was trained on.",
                {"dataset": f"leave it out, or give dataset #{manifest.run.dataset_id}"},
            )
        dataset = manifest.run.dataset
    if dataset is None:
        raise ApplicationError("Choose a dataset to evaluate on.", {"dataset": "required"})
    if created_by is not None:
        seen = visible(created_by, "datasets.view_dataset", Dataset.objects.filter(pk=dataset.pk))
        if not seen.exists():
            raise ApplicationError("No such dataset.", {"dataset": "no such dataset"})
    if not model.checkpoint:
        raise ApplicationError(f"Model {model.name!r} has no checkpoint.", {"model": "no checkpoint"})
    shared = set(model.class_names) & set(dataset.class_names())
    if not shared:
        raise ApplicationError(
            f"Model {model.name!r} and dataset {dataset.name!r} share no class: the model knows "
            f"{', '.join(model.class_names)}; the dataset has {', '.join(dataset.class_names()) or 'none'}.",
            {"dataset": "no class in common with the model"},
        )
    params = {"evaluate": split, **evaluation_parameters(model.architecture, parameters)}
    return run_queue(
        kind=TrainingRun.Kind.EVALUATE,
        name=name,
        default_name=f"Evaluate {model.name} on {dataset.name} ({split})",
        created_by=created_by,
        time_limit_seconds=time_limit_seconds,
        priority=priority,
        retry_of=retry_of,
        attempt=attempt,
        audit={"kind": "evaluate", "model": model.pk, "dataset": dataset.pk},
        dataset=dataset,
        evaluated_model=model,
        architecture=model.architecture if model.architecture in PRESETS else DEFAULT_PRESET,
        parameters=params,
        max_epochs=1,
    )


def evaluation_run_again(*, run: TrainingRun, user: Any, resume: bool) -> TrainingRun:
    """An evaluation has no checkpoint to resume from: it is evaluated again, with the same model, data and
    parameters (the user who asks must still see both, and becomes its owner)."""
    if resume:
        raise ApplicationError(
            f"Run #{run.pk} is an evaluation; it has no checkpoint to resume from. Retry it instead.",
            {"kind": "evaluate"},
        )
    root = run.retry_of_root or run
    if run.evaluated_model is None:
        raise ApplicationError(f"Run #{run.pk} evaluated a model that was deleted since.", {"model": "deleted"})
    with transaction.atomic():
        attempt = next_attempt(run)
        new = evaluation_run_create(
            model=run.evaluated_model,  # checked above
            dataset=run.dataset,
            split=run.parameters.get("evaluate", "all"),
            parameters={k: v for k, v in run.parameters.items() if k in EVALUATION_PARAMS},
            name=f"{root.name} (attempt {attempt})"[:200],
            created_by=user,
            time_limit_seconds=run.time_limit_seconds,
            retry_of=run,
            attempt=attempt,
        )
        audit_record(action="retried", obj=run, actor=user, new_run=new.pk)
    return new
