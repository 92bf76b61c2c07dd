"""Transitions users ask for: create (validate, queue), cancel, retry and resume (one path), delete. Each checks
the acting user's permission here (``access.rules.require``), whatever interface calls it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
from django.db import transaction
from django.utils import timezone

from access.rules import Actor, require
from audit.services import audit_record
from core.errors import ApplicationError
from core.storage import delete_stored
from datasets.models import Dataset
from datasets.selectors import dataset_assert_trainable, longest_side_median
from datasets.splits import split_preview
from engine.anchors import box_report
from engine.config import checkpoint_epoch
from engine.params import ParamError, validate_params
from engine.pipelines import describe as describe_pipeline
from engine.presets import DEFAULT_PRESET, PRESETS, family_of, get_preset
from engine.transfer import describe_transfer
from models_registry.models import TrainedModel
from models_registry.selectors import models_visible_to
from workers.resources import assert_some_worker_can_take

from ..kinds import KINDS
from ..models import TrainingRun
from ..notices import run_ended
from ..run_files import run_folder
from ..selectors import box_sizes_seen, last_checkpoint
from .evaluation_runs import evaluation_run_again
from .queueing import may_prioritize, next_attempt, run_queue, with_site_defaults

logger = logging.getLogger(__name__)
Status = TrainingRun.Status


def _check_base_model(base_model: TrainedModel, *, architecture: str, classes: list[str]) -> dict:
    """A base model must be of the run's architecture and have its weights; its classes may differ.

    Returns what the run will do with its weights (``engine.transfer.describe_transfer``): all of them load when
    the classes are the same, in the same order; otherwise the class-dependent layers of the head start afresh for
    the dataset's classes and everything else loads. The training child checks that tensor by tensor.
    """
    if family_of(base_model.architecture) != family_of(architecture):
        raise ApplicationError(
            f"Base model {base_model.name!r} is a {base_model.architecture} model; this run trains {architecture}.",
            {"base_model": "architecture differs"},
        )
    if not base_model.checkpoint:
        raise ApplicationError(f"Base model {base_model.name!r} has no checkpoint.", {"base_model": "no checkpoint"})
    plan = describe_transfer(get_preset(architecture), base_model.class_names, classes)
    return {**plan, "base_model": base_model.pk, "base_classes": list(base_model.class_names)}


@dataclass(frozen=True)
class RunPlan:
    """What a run will be, before it is queued: its complete parameters and what it does with a base model."""

    parameters: dict
    weight_transfer: dict
    split: dict = field(default_factory=dict)  # what a spatial or time split will do (random: nothing to say)
    # Said by a preview only: the training pipeline in words, and the boxes as the network will see them
    # against the preset's anchors (engine.anchors).
    pipeline: list[str] = field(default_factory=list)
    boxes: dict = field(default_factory=dict)


def with_resize(dataset: Dataset, architecture: str, parameters: dict | None) -> dict | None:
    """The parameters with ``resize`` chosen where they say nothing, as the aerial bench measured it
    (``bench/aerial_steps.py``): ``crops`` when the dataset's images are larger than the network input (their
    median longer side above ``image_size``) or a ``target_gsd`` is given, since shrinking a whole tile shrinks its
    small objects with it; ``whole`` otherwise. The choice is stored with the run like any parameter."""
    if parameters is not None and not isinstance(parameters, dict):
        return parameters  # refused by the validation
    given = dict(parameters or {})
    if given.get("resize") is not None:
        return given
    size = given.get("image_size", get_preset(architecture).defaults.get("image_size"))
    longest = longest_side_median(dataset)
    larger = isinstance(size, int) and longest is not None and longest > size
    given["resize"] = "crops" if larger or given.get("target_gsd") else "whole"
    return given


def training_run_plan(
    *, dataset: Dataset, architecture: str, base_model: TrainedModel | None, parameters: dict | None
) -> RunPlan:
    """Everything a run needs, checked before anything is saved (no permission check: see the callers)."""
    if architecture not in PRESETS:
        raise ApplicationError(
            f"Unknown architecture {architecture!r}.", {"architecture": f"choose one of {', '.join(PRESETS)}"}
        )
    if parameters is not None and not isinstance(parameters, dict):
        raise ApplicationError("Parameters must be an object of name: value.", {"parameters": "not an object"})
    try:
        params = validate_params(architecture, with_resize(dataset, architecture, with_site_defaults(parameters)))
    except ParamError as exc:
        raise ApplicationError("Invalid training parameters.", exc.errors) from exc
    if params["amp"] and params["device"] != "gpu":
        raise ApplicationError(
            "Mixed precision (amp) needs a GPU, and this run trains on the CPU (device cpu).",
            {"amp": "needs a GPU run (device gpu)"},
        )
    assert_some_worker_can_take(params)
    dataset_assert_trainable(dataset)
    transfer = {}
    if base_model is not None:
        transfer = _check_base_model(base_model, architecture=architecture, classes=dataset.class_names())
    split = {}
    if params["split"] != "random":  # refused now, not in the worker, when it cannot be made
        split = split_preview(
            dataset,
            strategy=params["split"],
            val_fraction=params["val_fraction"],
            seed=params["seed"],
            cell_size_m=params["split_cell_m"],
        )
    return RunPlan(parameters=params, weight_transfer=transfer, split=split)


def training_run_validate(
    *, dataset: Dataset, architecture: str, base_model: TrainedModel | None, parameters: dict | None
) -> dict:
    """The complete parameters of a valid run (see ``training_run_plan``)."""
    return training_run_plan(
        dataset=dataset, architecture=architecture, base_model=base_model, parameters=parameters
    ).parameters


def _check_user_may_train(user: Actor, *, dataset: Dataset, base_model: TrainedModel | None) -> None:
    if user is None:  # the platform itself
        return
    require(user, "training.add_trainingrun", message="You may not start training runs.")
    require(user, "datasets.use_dataset", dataset, message=f"You may not train on dataset {dataset.name!r}.")
    if base_model is not None and not models_visible_to(user).filter(pk=base_model.pk).exists():
        # The same answer as for an id that does not exist: a hidden model is not confirmed to exist.
        raise ApplicationError("No such base model.", {"base_model": "no such model"})


def training_run_preview(
    *, dataset: Dataset, architecture: str | None, base_model: TrainedModel | None, parameters: dict | None, user: Actor
) -> RunPlan:
    """What ``training_run_create`` would queue, said before anything is saved: the same checks (the user's too),
    the complete parameters, and what the run will do with the base model's weights."""
    _check_user_may_train(user, dataset=dataset, base_model=base_model)
    if architecture is None:
        architecture = base_model.architecture if base_model else DEFAULT_PRESET
    plan = training_run_plan(dataset=dataset, architecture=architecture, base_model=base_model, parameters=parameters)
    sizes = np.array(box_sizes_seen(dataset, plan.parameters), dtype=np.float64)
    return replace(
        plan,
        pipeline=describe_pipeline(plan.parameters),
        boxes=box_report(sizes, get_preset(architecture).anchors, plan.parameters["anchor_scale"]),
    )


@transaction.atomic
def training_run_create(
    *,
    dataset: Dataset,
    architecture: str | None = None,
    base_model: TrainedModel | None = None,
    parameters: dict | None = None,
    name: str = "",
    created_by: Actor = None,
    retry_of: TrainingRun | None = None,
    time_limit_seconds: int | None = None,
    attempt: int = 1,
    resume_checkpoint: str = "",
    priority: str | int | None = None,
) -> TrainingRun:
    """Validate and queue a run. ``created_by`` (when given) must be allowed to train on the dataset and to use the
    base model (and for ``priority`` "high", to prioritize runs), and may not have more than the site's share of
    queued runs; the creator gets the run's object permissions."""
    _check_user_may_train(created_by, dataset=dataset, base_model=base_model)
    if architecture is None:
        architecture = base_model.architecture if base_model else DEFAULT_PRESET
    plan = training_run_plan(dataset=dataset, architecture=architecture, base_model=base_model, parameters=parameters)
    params = plan.parameters
    transfer = plan.weight_transfer
    if resume_checkpoint and retry_of is not None and transfer:
        # The weights come from the attempt's own checkpoint; the base model's were loaded by the first attempt.
        first = (retry_of.weight_transfer or {}).get("applied")
        transfer = {
            **transfer,
            "summary": f"Resumed from a checkpoint of run #{retry_of.pk}; {transfer['summary']}",
            **({"applied": first} if first else {}),
        }
    return run_queue(
        kind=TrainingRun.Kind.TRAIN,
        name=name,
        default_name=f"{dataset.name} / {architecture}",
        created_by=created_by,
        time_limit_seconds=time_limit_seconds,
        priority=priority,
        retry_of=retry_of,
        attempt=attempt,
        audit={
            "dataset": dataset.pk,
            "architecture": architecture,
            "base_model": base_model.pk if base_model else None,
            "retry_of": retry_of.pk if retry_of else None,
        },
        dataset=dataset,
        architecture=architecture,
        base_model=base_model,
        parameters=params,
        max_epochs=params["epochs"],
        resume_checkpoint=resume_checkpoint,
        weight_transfer=transfer,
    )


@transaction.atomic
def training_run_cancel(*, run: TrainingRun, user: Actor = None) -> TrainingRun:
    """queued -> cancelled at once; running -> cancelled, and the worker stops the training process group at its
    next progress tick (about a second). Finished runs are refused. ``user`` needs the run's schedule permission."""
    require(user, "training.schedule_trainingrun", run, message=f"You may not cancel run #{run.pk}.")
    now = timezone.now()
    updated = TrainingRun.objects.filter(pk=run.pk, status__in=[Status.QUEUED, Status.RUNNING]).update(
        status=Status.CANCELLED, finished_at=now, error_message=f"Cancelled by {_who(user)}."
    )
    run.refresh_from_db()
    if not updated:
        raise ApplicationError(
            f"Run #{run.pk} is {run.status}; only queued or running runs can be cancelled.", {"status": run.status}
        )
    audit_record(action="cancelled", obj=run, actor=user)
    run_ended(run.pk)
    return run


def _new_attempt(*, run: TrainingRun, user: Actor, resume: bool) -> TrainingRun:
    """Retry and resume: a new queued attempt of a failed or cancelled run, linked to it.

    The attempt belongs to the run's owner (who retries it is recorded in the audit trail, not made its owner);
    the one who asks needs the run's schedule permission and must be allowed to train on its data.
    """
    verb = "resume" if resume else "retry"
    require(user, "training.schedule_trainingrun", run, message=f"You may not {verb} run #{run.pk}.")
    if run.status not in (Status.FAILED, Status.CANCELLED):
        raise ApplicationError(
            f"Run #{run.pk} is {run.status}; only failed or cancelled runs can be "
            f"{'resumed' if resume else 'retried'}.",
            {"status": run.status},
        )
    if run.kind == TrainingRun.Kind.EVALUATE:
        return evaluation_run_again(run=run, user=user, resume=resume)
    if run.kind in KINDS:
        return KINDS[run.kind].again(run=run, user=user, resume=resume)
    checkpoint = last_checkpoint(run) if resume else None
    if resume and checkpoint is None:
        raise ApplicationError(
            f"Run #{run.pk} kept no checkpoint (it stopped before its first epoch ended); retry it instead.",
            {"checkpoint": "none"},
        )
    epochs = int(run.parameters.get("epochs") or run.max_epochs or 0)
    if checkpoint is not None and epochs and checkpoint_epoch(checkpoint) >= epochs:
        # Nothing would train: mmengine's runner would end at once with no checkpoint of the attempt's own.
        raise ApplicationError(
            f"Run #{run.pk} stopped after its last epoch ({epochs} of {epochs}) had trained: its checkpoint holds "
            "all the training there is to resume. Retry it to train again, or register the checkpoint as a base "
            "model.",
            {"checkpoint": "final epoch"},
        )
    _check_user_may_train(user, dataset=run.dataset, base_model=run.base_model)
    owner = run.created_by or user
    root = run.retry_of_root or run
    with transaction.atomic():
        attempt = next_attempt(run)
        suffix = " (resumed)" if resume else f" (attempt {attempt})"
        new = training_run_create(
            dataset=run.dataset,
            architecture=run.architecture,
            base_model=run.base_model,
            parameters=dict(run.parameters),
            name=f"{root.name}{suffix}"[:200],
            created_by=owner,
            retry_of=run,
            time_limit_seconds=run.time_limit_seconds,
            attempt=attempt,
            resume_checkpoint=checkpoint or "",
            # An attempt keeps the run's priority while its owner may still give it.
            priority=run.priority if may_prioritize(owner) else None,
        )
        audit_record(
            action="resumed" if resume else "retried",
            obj=run,
            actor=user,
            new_run=new.pk,
            **({"checkpoint": checkpoint.rsplit("/", 1)[-1]} if checkpoint else {}),
        )
    return new


def training_run_retry(*, run: TrainingRun, user: Actor = None) -> TrainingRun:
    """A new queued attempt with the same dataset, base model and parameters, linked to the one it retries."""
    return _new_attempt(run=run, user=user, resume=False)


def training_run_resume(*, run: TrainingRun, user: Actor = None) -> TrainingRun:
    """A new attempt that continues a failed or cancelled run from its last epoch checkpoint (weights, optimizer,
    learning-rate schedule and epoch), linked to it."""
    return _new_attempt(run=run, user=user, resume=True)


def training_run_delete(*, run: TrainingRun, user: Actor = None) -> None:
    """Delete a finished run and, after the commit, its stored files (log, events, last checkpoint). Its model, if
    any, stays registered."""
    require(user, "training.delete_trainingrun", run, message=f"You may not delete run #{run.pk}.")
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if not run.is_finished:
            raise ApplicationError(
                f"Run #{run.pk} is {run.status}; cancel it before deleting it.", {"status": run.status}
            )
        folder = run_folder(run.pk)
        audit_record(action="deleted", obj=run, actor=user)
        run.delete()
        transaction.on_commit(lambda: delete_stored(folder))


def _who(user: Actor) -> str:
    return getattr(user, "username", None) or "an operator"
