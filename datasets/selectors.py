"""Reads of datasets that carry rules: what a user may see (datasets, imports), the dataset a command names, and
whether a dataset is fit to train on."""

from __future__ import annotations

import re

from django.db.models import Aggregate, Count, F, FloatField, Max, Min, Q
from django.db.models.functions import Coalesce, Greatest

from access.rules import own_or_all, visible
from core.errors import ApplicationError

from .models import Annotation, Dataset, DatasetImage, DatasetImport, Orthophoto


def datasets_visible_to(user, perm: str = "datasets.view_dataset"):
    """The datasets ``user`` holds ``perm`` on (globally or per object)."""
    return visible(user, perm, Dataset.objects.all())


def orthophotos_visible_to(user):
    """The orthophotos ``user`` may see: those of the datasets they may see."""
    return Orthophoto.objects.filter(dataset__in=datasets_visible_to(user))


def dataset_by_ref(user, ref: str, perm: str = "datasets.view_dataset") -> Dataset:
    """The dataset a command names by id or by name, among those ``user`` holds ``perm`` on; one answer for a
    dataset that does not exist and one the user may not see."""
    datasets = datasets_visible_to(user, perm)
    ref = str(ref).strip()
    dataset = (datasets.filter(pk=int(ref)) if ref.isascii() and ref.isdigit() else datasets.filter(name=ref)).first()
    if dataset is None:
        raise ApplicationError(f"No dataset {ref!r}.", {"dataset": "no such dataset"})
    return dataset


def imports_visible_to(user, queryset=None):
    """A user's own imports; every import for users who may change every dataset."""
    queryset = DatasetImport.objects.select_related("dataset", "created_by") if queryset is None else queryset
    return own_or_all(user, "datasets.change_dataset", queryset)


def datasets_with_stats(queryset):
    """Datasets with ``image_count``, ``annotation_count`` and ``extent`` read from their trigger-kept stats row:
    one join, whatever the dataset sizes."""
    return (
        queryset.annotate(
            image_count=Coalesce(F("stats__image_count"), 0),
            annotation_count=Coalesce(F("stats__annotation_count"), 0),
            extent=F("stats__extent"),
        )
        .select_related("created_by")
        .prefetch_related("classes")
    )


class Median(Aggregate):
    """PostgreSQL's continuous median of a column (``percentile_cont(0.5)``)."""

    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def ground_resolution(dataset: Dataset, *, enabled_only: bool = False) -> dict | None:
    """The ground sample distance of the dataset's images with a footprint, metres per pixel: how many have one,
    the smallest, the median and the largest; None when none has."""
    images = DatasetImage.objects.filter(dataset=dataset, gsd_m__isnull=False)
    if enabled_only:
        images = images.filter(enabled=True)
    row = images.aggregate(images=Count("id"), min_m=Min("gsd_m"), median_m=Median("gsd_m"), max_m=Max("gsd_m"))
    if not row["images"]:
        return None
    return {"images": row["images"], **{k: round(row[k], 5) for k in ("min_m", "median_m", "max_m")}}


def longest_side_median(dataset: Dataset) -> float | None:
    """The median of the enabled images' longer sides, in pixels; None without enabled images."""
    images = DatasetImage.objects.filter(dataset=dataset, enabled=True)
    return images.aggregate(side=Median(Greatest("width", "height")))["side"]


def dataset_training_summary(dataset: Dataset) -> dict:
    """Counts of what a training run would use: enabled images that hold enabled boxes, per class."""
    usable = Annotation.objects.filter(image__dataset=dataset, image__enabled=True, enabled=True)
    per_class = dict(
        dataset.classes.annotate(n=Count("annotations", filter=Q(annotations__in=usable))).values_list("name", "n")
    )
    return {
        "classes": dataset.class_names(),
        "images": DatasetImage.objects.filter(dataset=dataset, enabled=True).count(),
        "images_with_boxes": usable.values("image_id").distinct().count(),
        "annotations": sum(per_class.values()),
        "annotations_per_class": per_class,
    }


def dataset_assert_trainable(dataset: Dataset, *, min_images: int = 2) -> dict:
    """Raise ApplicationError saying what is missing when the dataset cannot be trained on."""
    summary = dataset_training_summary(dataset)
    if not summary["classes"]:
        raise ApplicationError(f"Dataset {dataset.name!r} has no classes.", {"dataset": "no classes"})
    if summary["images"] == 0:
        raise ApplicationError(f"Dataset {dataset.name!r} has no enabled images.", {"dataset": "no images"})
    if summary["annotations"] == 0:
        raise ApplicationError(
            f"Dataset {dataset.name!r} has no enabled annotations on enabled images.",
            {"dataset": "no usable annotations"},
        )
    if summary["images_with_boxes"] < min_images:
        raise ApplicationError(
            f"Dataset {dataset.name!r} has {summary['images_with_boxes']} usable image(s); a training run needs at "
            f"least {min_images} (one to train on, one to validate).",
            {"dataset": "too few usable images"},
        )
    return summary


# Its stored name: its hash, then a random part (images stored since the one-PUT import) or none, and its extension.
_STORED_IMAGE = re.compile(r"(?:[^\s'\"]*/)?datasets/(\d+)/images/([0-9a-f]{64})(?:[-_][0-9A-Za-z]+)?\.[A-Za-z0-9]+")


def describe_image_paths(message: str) -> str:
    """Replace stored image paths in an error by the dataset image they are: what an operator can act on."""

    def describe(match: re.Match) -> str:
        image = DatasetImage.objects.filter(dataset_id=int(match.group(1)), sha256=match.group(2)).first()
        return f"image #{image.pk} {image.original_name!r}" if image else "an image file"

    return _STORED_IMAGE.sub(describe, message)


def pixel_to_footprint(ring, width: int, height: int, x: float, y: float) -> tuple[float, float]:
    """A pixel of an image in map coordinates through its footprint, whose ring starts at the image's top-left
    corner and runs to its top-right, bottom-right and bottom-left (as georeferenced imports and tiles store it):
    bilinear between the corners, exact for the affine geotransforms of orthophotos."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = ring[:4]
    u, v = x / width, y / height
    lon = (1 - u) * (1 - v) * x0 + u * (1 - v) * x1 + u * v * x2 + (1 - u) * v * x3
    lat = (1 - u) * (1 - v) * y0 + u * (1 - v) * y1 + u * v * y2 + (1 - u) * v * y3
    return lon, lat


def boxes_on_map(dataset: Dataset, *, limit: int) -> list[dict]:
    """The enabled boxes of the dataset's enabled, footprinted images in map coordinates (WGS 84): each a ring of
    the box's four corners, with its class and image."""
    rows = (
        Annotation.objects.filter(image__dataset=dataset, enabled=True, image__enabled=True)
        .exclude(image__footprint=None)
        .select_related("image", "dataset_class")
        .only("x", "y", "width", "height", "image__width", "image__height", "image__footprint", "dataset_class__name")
        .order_by("image_id", "id")[:limit]
    )
    found = []
    for box in rows:
        ring = box.image.footprint.exterior_ring.coords  # type: ignore[union-attr]  # footprinted only (above)
        if len(ring) != 5:
            continue  # not a four-cornered footprint: the box has no place on the map
        corners = [(box.x, box.y), (box.x + box.width, box.y), (box.x + box.width, box.y + box.height)]
        corners.append((box.x, box.y + box.height))
        points = [pixel_to_footprint(ring, box.image.width, box.image.height, px, py) for px, py in corners]
        found.append({"image": box.image_id, "class": box.dataset_class.name, "ring": [*points, points[0]]})
    return found
