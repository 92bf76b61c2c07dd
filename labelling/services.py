"""Labelling tasks: created here (every rule checked, nothing queued on a refusal), built by a worker
(``labelling.building``), and compared with what came back (``labelling.acceptance``)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from access.rules import Actor, require
from audit.services import audit_record
from core.errors import ApplicationError
from core.quotas import queue_share_check
from datasets.models import Dataset
from datasets.selectors import datasets_visible_to
from detection.selectors import detection_runs_visible_to
from models_registry.card import stored_config
from models_registry.evaluations import validation_of
from models_registry.models import TrainedModel
from models_registry.selectors import models_visible_to
from training.models import TrainingRun

from .models import LabellingTask
from .selection import RULES

TASK = "labelling.tasks.build_labelling_task"
MAX_COUNT = 5000
MAX_DATASET_IMAGES = 5000


def model_version(model: TrainedModel) -> str:
    """How the tools name the model: its name, its id here and the start of its weights' digest."""
    return f"{model.name} #{model.pk} ({model.checkpoint_sha256[:8]})"


def _number(parameters: dict, key: str, default, low: float, high: float, *, integer: bool = False) -> Any:
    value = parameters.get(key, default)
    kind_ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not kind_ok or not low <= value <= high:
        what = "a whole number" if integer else "a number"
        raise ApplicationError(f"Invalid {key}.", {key: f"{what} from {low:g} to {high:g}"})
    return value


def checked_parameters(raw: dict, *, run: TrainingRun | None) -> dict:
    """The task's parameters with their defaults, each checked (ApplicationError naming the field)."""
    known = {"rule", "count", "band", "weak_classes", "min_distance_m", "score_threshold", "tile_size", "image_url"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ApplicationError(f"Unknown parameter {unknown[0]!r}.", {unknown[0]: "unknown"})
    rule = raw.get("rule", "all")
    if rule not in RULES:
        raise ApplicationError(f"Unknown rule {rule!r}.", {"rule": f"one of {', '.join(RULES)}"})
    band = raw.get("band", [0.3, 0.7])
    if (
        not isinstance(band, (list, tuple))
        or len(band) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in band)
        or not 0 <= band[0] < band[1] <= 1
    ):
        raise ApplicationError("Invalid band.", {"band": "two scores, low < high, from 0 to 1"})
    image_url = raw.get("image_url", "/data/local-files/?d=images/")
    if not isinstance(image_url, str) or len(image_url) > 500 or any(c in image_url for c in "\r\n\t"):
        raise ApplicationError("Invalid image_url.", {"image_url": "a URL prefix, at most 500 characters"})
    default_tile = int((run.parameters.get("tile_size") if run is not None else None) or 1024)
    return {
        "rule": rule,
        "count": _number(raw, "count", 100, 1, MAX_COUNT, integer=True),
        "band": [float(band[0]), float(band[1])],
        "weak_classes": _number(raw, "weak_classes", 1, 1, 100, integer=True),
        "min_distance_m": float(_number(raw, "min_distance_m", 0, 0, 100_000)),
        "score_threshold": float(_number(raw, "score_threshold", 0.3, 0, 1)),
        "tile_size": _number(raw, "tile_size", default_tile, 64, 4096, integer=True),
        "image_url": image_url,
    }


def _visible_model(model: TrainedModel | None, user: Actor, field: str) -> TrainedModel:
    if model is None:
        raise ApplicationError("Name the model whose boxes are the pre-annotations.", {field: "required"})
    if user is not None and not models_visible_to(user).filter(pk=model.pk).exists():
        raise ApplicationError("No such model.", {field: "no such model"})
    config = stored_config(model)
    if not isinstance(config, dict) or "model" not in config:
        raise ApplicationError("This model has no runnable config.", {field: "no runnable config"})
    return model


def _weak_classes(model: TrainedModel, count: int) -> list[str]:
    """The ``count`` classes with the lowest AP on the model's validation split."""
    evaluation = validation_of(model)
    rows = [r for r in (evaluation.per_class if evaluation else []) if isinstance(r.get("ap"), (int, float))]
    if not rows:
        raise ApplicationError(
            f"Model #{model.pk} has no per-class AP (no validation results): choose another rule.",
            {"rule": "no per-class AP"},
        )
    return [r["class"] for r in sorted(rows, key=lambda r: (r["ap"], r["class"]))[:count]]


def _check_to_label(dataset: Dataset, user: Actor) -> None:
    if user is not None and not datasets_visible_to(user).filter(pk=dataset.pk).exists():
        raise ApplicationError("No such dataset.", {"to_label": "no such dataset"})
    require(user, "datasets.change_dataset", dataset, message=f"You may not change dataset {dataset.name!r}.")


def _run_model(run: TrainingRun, model: TrainedModel | None, user: Actor) -> TrainedModel | None:
    """The model of a finished detection run the user may see (a run's pre-annotations are its own model's)."""
    if user is not None and not detection_runs_visible_to(user).filter(pk=run.pk).exists():
        raise ApplicationError("No such detection run.", {"detection_run": "no such detection run"})
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise ApplicationError(
            f"Run #{run.pk} is {run.status}: its tiles are exported once it has finished.",
            {"detection_run": run.status},
        )
    if model is not None and model.pk != run.evaluated_model_id:
        raise ApplicationError(
            "A detection run's pre-annotations are its own model's detections.", {"model": "the run's model"}
        )
    return run.evaluated_model


def _check_dataset(dataset: Dataset, user: Actor) -> None:
    if user is not None and not datasets_visible_to(user).filter(pk=dataset.pk).exists():
        raise ApplicationError("No such dataset.", {"dataset": "no such dataset"})
    images = dataset.images.filter(enabled=True).count()
    if not images or images > MAX_DATASET_IMAGES:
        raise ApplicationError(
            f"Dataset {dataset.name!r} has {images} images: a labelling task runs the model on 1 to "
            f"{MAX_DATASET_IMAGES}.",
            {"dataset": f"{images} images"},
        )


@transaction.atomic
def labelling_task_create(
    *,
    user: Actor,
    name: str = "",
    detection_run: TrainingRun | None = None,
    dataset: Dataset | None = None,
    model: TrainedModel | None = None,
    second_model: TrainedModel | None = None,
    parameters: dict | None = None,
    to_label: Dataset | None = None,
) -> LabellingTask:
    """Queue a labelling task: the tiles of a finished detection run (its model's boxes: the detections), or the
    images of a dataset run through ``model``, chosen by a rule and exported for CVAT and Label Studio; with
    ``to_label``, the chosen pictures are also added to that dataset, disabled and marked to label."""
    require(user, "labelling.add_labellingtask", message="You may not create labelling tasks.")
    if to_label is not None:
        _check_to_label(to_label, user)
    if (detection_run is None) == (dataset is None):
        raise ApplicationError("Give a detection run or a dataset, not both.", {"source": "one of the two"})
    if detection_run is not None:
        model = _run_model(detection_run, model, user)
    elif dataset is not None:
        _check_dataset(dataset, user)
    model = _visible_model(model, user, "model")
    checked = checked_parameters(parameters or {}, run=detection_run)
    if checked["rule"] == "disagreement":
        second_model = _visible_model(second_model, user, "second_model")
        if second_model.pk == model.pk:
            raise ApplicationError("Two different models disagree, not one.", {"second_model": "the same model"})
    elif second_model is not None:
        raise ApplicationError("A second model is only for the disagreement rule.", {"second_model": "not used"})
    if checked["rule"] == "weak_classes":
        checked["classes"] = _weak_classes(model, checked["weak_classes"])
    name = (name or "").strip() or f"{model.name}: {checked['rule']} tiles"
    if len(name) > 200:
        raise ApplicationError("The name is too long.", {"name": "at most 200 characters"})
    queue_share_check(user)
    task = LabellingTask.objects.create(
        name=name,
        model=model,
        model_version=model_version(model),
        second_model=second_model,
        detection_run=detection_run,
        dataset=dataset,
        parameters=checked,
        to_label_dataset=to_label,
        created_by=user,
    )
    audit_record(
        action="labelling task",
        obj=model,
        actor=user,
        task=task.pk,
        rule=checked["rule"],
        detection_run=task.detection_run_id,
        dataset=task.dataset_id,
    )
    transaction.on_commit(lambda: _enqueue(task.pk))
    return task


def _enqueue(task_id: int) -> None:
    # django-q2 sets up its cluster configuration on import: only where it is used
    from django_q.tasks import async_task

    async_task(TASK, task_id, task_name=f"labelling-task-{task_id}")
