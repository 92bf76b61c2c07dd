"""What came back from the labelling tool against what was sent: the acceptance rate of a model's
pre-annotations.

The labelled images come back through the ordinary zip import into a dataset; an image is matched to the exported
one by its file name. On each image, the exported boxes and the returned ones are paired, best overlap first:

- **unchanged**: same class, IoU at least 0.95 (the person accepted the box as it was);
- **corrected**: paired at IoU at least 0.5 but moved, resized or given another class;
- **removed**: an exported box with no returned box (a false alarm deleted);
- **added**: a returned box with no exported one (a site the model missed).

The acceptance rate is unchanged / exported: the share of the model's boxes a person did not have to touch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from django.db import transaction
from django.db.models import Q

from access.rules import Actor, require
from audit.services import audit_record
from core.errors import ApplicationError
from datasets.models import Annotation, Dataset
from datasets.selectors import datasets_visible_to

from .models import LabellingTask
from .selection import iou

UNCHANGED_IOU = 0.95
PAIRED_IOU = 0.5
COUNTS = ("exported", "unchanged", "corrected", "removed", "added")
LS_PREFIX = re.compile(r"^[0-9a-f]{8}__")


def compare_image(sent: Sequence[Sequence], back: Sequence[Sequence]) -> dict[str, int]:
    """``sent``: [class, score, x, y, w, h]; ``back``: [class, x, y, w, h]."""
    free_sent, free_back = set(range(len(sent))), set(range(len(back)))
    unchanged = corrected = 0
    pairs = sorted(((iou(s[2:6], b[1:5]), i, j) for i, s in enumerate(sent) for j, b in enumerate(back)), reverse=True)
    for value, i, j in pairs:  # first the boxes accepted as they were
        if value >= UNCHANGED_IOU and sent[i][0] == back[j][0] and i in free_sent and j in free_back:
            free_sent.discard(i)
            free_back.discard(j)
            unchanged += 1
    for value, i, j in pairs:
        if value >= PAIRED_IOU and i in free_sent and j in free_back:
            free_sent.discard(i)
            free_back.discard(j)
            corrected += 1
    return {
        "exported": len(sent),
        "unchanged": unchanged,
        "corrected": corrected,
        "removed": len(free_sent),
        "added": len(free_back),
    }


def rate(counts: dict) -> float | None:
    return round(counts["unchanged"] / counts["exported"], 4) if counts["exported"] else None


def compare(exported: Iterable[dict], returned: dict[str, list[list]]) -> dict:
    """The counts over the images that came back (``returned``: file name -> boxes), and how many did not."""
    totals = dict.fromkeys(COUNTS, 0)
    images = missing = 0
    for image in exported:
        back = returned.get(image["name"])
        if back is None:
            missing += 1
            continue
        images += 1
        for key, value in compare_image(image["boxes"], back).items():
            totals[key] += value
    return {**totals, "images": images, "images_missing": missing, "acceptance_rate": rate(totals)}


def exported_name(original_name: str) -> str:
    """The file name as it was exported: Label Studio's export puts "<8 hex digits>__" before it."""
    return LS_PREFIX.sub("", original_name)


def returned_boxes(dataset: Dataset, names: set[str]) -> dict[str, list[list]]:
    """The dataset's images named as exported ones (Label Studio's prefix aside), with their enabled boxes."""
    images = dataset.images.filter(Q(original_name__in=names) | Q(original_name__regex=LS_PREFIX.pattern)).values_list(
        "pk", "original_name"
    )
    chosen = {pk: exported_name(name) for pk, name in images if exported_name(name) in names}
    boxes: dict[str, list[list]] = {name: [] for name in chosen.values()}
    rows = (
        Annotation.objects.filter(image__in=list(chosen), enabled=True)
        .values_list("image_id", "dataset_class__name", "x", "y", "width", "height")
        .order_by("id")
    )
    for image_id, cls, x, y, w, h in rows:
        boxes[chosen[image_id]].append([cls, x, y, w, h])
    return boxes


@transaction.atomic
def labelling_task_acceptance(*, task: LabellingTask, dataset: Dataset, user: Actor) -> dict:
    """Compare ``task``'s pre-annotations with the labelled images in ``dataset`` and keep the report on the task."""
    require(user, "labelling.add_labellingtask", message="You may not report on labelling tasks.")
    if user is not None and not datasets_visible_to(user).filter(pk=dataset.pk).exists():
        raise ApplicationError("No such dataset.", {"dataset": "no such dataset"})
    if task.status != LabellingTask.Status.SUCCEEDED:
        raise ApplicationError(f"Task #{task.pk} is {task.status}: nothing was exported yet.", {"task": task.status})
    names = {image["name"] for image in task.images}
    returned = returned_boxes(dataset, names)
    if not returned:
        raise ApplicationError(
            f"Dataset {dataset.name!r} holds none of the task's {len(names)} images (matched by file name): import "
            "the tool's export into it first.",
            {"dataset": "no image of the task"},
        )
    report = {**compare(task.images, returned), "dataset": dataset.pk, "model_version": task.model_version}
    task.returned_dataset, task.acceptance = dataset, report
    task.save(update_fields=["returned_dataset", "acceptance"])
    rate = report["acceptance_rate"]
    audit_record(action="acceptance", obj=task.model, actor=user, task=task.pk, dataset=dataset.pk, rate=rate)
    return report


def acceptance_by_model_version(tasks: Iterable[LabellingTask]) -> list[dict]:
    """The reports of ``tasks`` summed per model version, highest acceptance first."""
    rows: dict[str, dict] = {}
    for task in tasks:
        if not task.acceptance:
            continue
        row = rows.setdefault(
            task.model_version,
            {"model_version": task.model_version, "model": task.model_id, "tasks": 0, "images": 0}
            | dict.fromkeys(COUNTS, 0),
        )
        row["tasks"] += 1
        for key in (*COUNTS, "images"):
            row[key] += task.acceptance.get(key, 0)
    out = [row | {"acceptance_rate": rate(row)} for row in rows.values()]
    return sorted(out, key=lambda r: (-(r["acceptance_rate"] or 0), r["model_version"]))
