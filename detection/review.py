"""A person's review of what a detection run found: confirm, reject or correct each detection (move or resize its
box, change its class), and draw the sites the model missed. Every decision records who and when, goes to the
run's audit trail, and can be changed again.

- **Who**: ``detection.review_detection`` (Trainers, Publishers, Administrators) on a run the reviewer can see; a
  detection of a hidden run is answered as a missing one.
- **Boxes** are in the orthophoto's pixels. A correction stays inside the window its crop shows (the box's own
  size of context on every side): a box elsewhere is a new site, not a correction. A drawn site lies inside the
  orthophoto. A moved box gets its polygon and area again, and its ignore-zone flag.
- **The model's answer is kept**: the first correction keeps the model's box and class (``model_box``,
  ``model_class``), so what a model got right can be measured later.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from access.rules import Actor, require
from audit.services import audit_record
from core.errors import ApplicationError
from datasets.models import Orthophoto
from training.models import TrainingRun

from .crops import crop_window, detection_target
from .execution import area_m2, frame_of
from .models import Detection, IgnoreZone
from .review_figures import review_figures_store
from .selectors import detection_runs_visible_to

DECISIONS = (Detection.State.NEW, Detection.State.CONFIRMED, Detection.State.REJECTED)
MAX_BULK = 10_000


def reviewable(user: Actor, detection_ids: list[Any], run: TrainingRun | None = None) -> list[Detection]:
    """The detections ``detection_ids`` names, of runs the user sees (and of ``run`` where given); a missing or
    hidden one is refused by the same message."""
    require(user, "detection.review_detection", message="You may not review detections.")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in detection_ids):
        raise ApplicationError("Detections are named by id.", {"detections": "a list of integer ids"})
    rows = Detection.objects.filter(pk__in=detection_ids).select_related("orthophoto", "run")
    if user is not None:
        rows = rows.filter(run__in=detection_runs_visible_to(user))
    if run is not None:
        rows = rows.filter(run=run)
    found = {d.pk: d for d in rows}
    missing = [i for i in detection_ids if i not in found]
    if missing:
        raise ApplicationError("No such detection.", {"detections": f"no such detection: {missing[0]}"})
    return [found[i] for i in dict.fromkeys(detection_ids)]


def checked_box(value: Any, *, inside: tuple[float, float, float, float], where: str) -> list[float]:
    """[x1, y1, x2, y2] in pixels, a real box inside ``inside`` (x, y, width, height), or ApplicationError."""
    if (
        not isinstance(value, list | tuple)
        or len(value) != 4
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
    ):
        raise ApplicationError("A box is [x1, y1, x2, y2] in the orthophoto's pixels.", {"pixel_box": "4 numbers"})
    x1, y1, x2, y2 = (float(v) for v in value)
    if not (x2 - x1 >= 1 and y2 - y1 >= 1):
        raise ApplicationError("The box is empty.", {"pixel_box": "x2 > x1 and y2 > y1, at least a pixel"})
    left, top, width, height = inside
    if x1 < left or y1 < top or x2 > left + width or y2 > top + height:
        raise ApplicationError(
            f"The box lies outside {where} ({left:g}, {top:g} to {left + width:g}, {top + height:g}).",
            {"pixel_box": f"inside {where}"},
        )
    return [round(v, 2) for v in (x1, y1, x2, y2)]


def checked_class(run: TrainingRun, name: Any) -> tuple[int, str]:
    model = run.evaluated_model
    classes = list(model.class_names) if model is not None else []
    if not isinstance(name, str) or name not in classes:
        raise ApplicationError(
            f"{name!r} is not a class of the run's model; it knows {', '.join(classes)}.", {"class_name": "unknown"}
        )
    return classes.index(name), name


def place(detection: Detection, box: list[float]) -> None:
    """Give the detection the pixel box, its polygon and area (georeferenced orthophotos) and its ignore flag."""
    detection.pixel_box = box
    polygon = frame_of([detection.orthophoto]).polygon(box)
    detection.geometry = polygon
    detection.area_m2 = round(area_m2(polygon), 3) if polygon is not None else None
    zone = None
    if polygon is not None:
        zone = IgnoreZone.objects.filter(dataset_id=detection.run.dataset_id, geometry__intersects=polygon).first()
    detection.ignored, detection.ignore_zone = zone is not None, zone


@transaction.atomic
def detection_review(
    *,
    detection: Detection,
    user: Actor,
    state: str | None = None,
    pixel_box: Any = None,
    class_name: Any = None,
) -> Detection:
    """One reviewer's decision on one detection; a moved box or another class makes it a correction (confirmed
    unless the decision says otherwise)."""
    (detection,) = reviewable(user, [detection.pk])
    if state is not None and state not in DECISIONS:
        raise ApplicationError("Unknown decision.", {"state": f"one of {', '.join(DECISIONS)}"})
    changes: dict[str, Any] = {}
    if pixel_box is not None:
        window = crop_window(detection_target(detection))
        box = checked_box(pixel_box, inside=window, where="the detection's crop")
        if box != detection.pixel_box:
            if detection.model_box is None and detection.origin == Detection.Origin.MODEL:
                detection.model_box = detection.pixel_box
            changes["pixel_box"] = [detection.pixel_box, box]
            place(detection, box)
    if class_name is not None:
        label, name = checked_class(detection.run, class_name)
        if name != detection.class_name:
            if not detection.model_class and detection.origin == Detection.Origin.MODEL:
                detection.model_class = detection.class_name
            changes["class_name"] = [detection.class_name, name]
            detection.label, detection.class_name = label, name
    if state is None and changes:
        state = Detection.State.CONFIRMED  # a correction is a confirmation of the corrected site
    if state is None:
        raise ApplicationError("Nothing to decide.", {"state": "give a decision, a box or a class"})
    changes["state"] = [detection.state, state]
    detection.state = state
    detection.reviewed_by = user
    detection.reviewed_at = timezone.now()
    detection.save()
    audit_record(action="review", obj=detection.run, actor=user, detection=detection.pk, changes=changes)
    review_figures_store(detection.run)
    return detection


@transaction.atomic
def detection_review_bulk(*, run: TrainingRun, user: Actor, detection_ids: list[Any], state: str) -> int:
    """The same decision on many detections of one run (one statement); how many were decided."""
    if not isinstance(detection_ids, list) or not detection_ids or len(detection_ids) > MAX_BULK:
        raise ApplicationError(f"Name between 1 and {MAX_BULK:,} detections.", {"detections": f"1 to {MAX_BULK:,} ids"})
    if state not in DECISIONS:
        raise ApplicationError("Unknown decision.", {"state": f"one of {', '.join(DECISIONS)}"})
    rows = reviewable(user, detection_ids, run=run)
    decided = Detection.objects.filter(pk__in=[d.pk for d in rows]).update(
        state=state, reviewed_by=user, reviewed_at=timezone.now()
    )
    audit_record(action="review", obj=run, actor=user, detections=len(rows), state=state)
    review_figures_store(run)
    return decided


@transaction.atomic
def detection_add(
    *, run: TrainingRun, user: Actor, orthophoto: Orthophoto, pixel_box: Any, class_name: Any
) -> Detection:
    """A site the model missed, drawn by a reviewer on one of the run's orthophotos: confirmed, score 1."""
    require(user, "detection.review_detection", message="You may not review detections.")
    if user is not None and not detection_runs_visible_to(user).filter(pk=run.pk).exists():
        raise ApplicationError("No such detection run.", {"run": "no such detection run"})
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise ApplicationError("Sites are added to a finished detection run.", {"run": f"it is {run.status}"})
    if orthophoto.pk not in (run.parameters.get("orthophotos") or []):
        raise ApplicationError("The orthophoto is not one of the run's.", {"orthophoto": "not of this run"})
    box = checked_box(pixel_box, inside=(0, 0, orthophoto.width, orthophoto.height), where="the orthophoto")
    label, name = checked_class(run, class_name)
    detection = Detection(
        run=run,
        orthophoto=orthophoto,
        label=label,
        class_name=name,
        score=1.0,
        origin=Detection.Origin.REVIEWER,
        state=Detection.State.CONFIRMED,
        reviewed_by=user,
        reviewed_at=timezone.now(),
    )
    place(detection, box)
    detection.save()
    audit_record(action="review", obj=run, actor=user, detection=detection.pk, changes={"added": box})
    review_figures_store(run)
    return detection
