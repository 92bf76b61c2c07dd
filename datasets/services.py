"""Writes to datasets: every rule about datasets, classes, images and boxes is checked here."""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.contrib.gis.geos import Point, Polygon
from django.db import transaction

from access.roles import CREATOR_PERMS
from access.rules import Actor, grant, require
from core.errors import ApplicationError
from core.storage import store_bytes

from .georef import read_georeference
from .images import clean_original_name, decode_image
from .models import Annotation, Dataset, DatasetClass, DatasetImage, dataset_image_upload_to

MAX_CLASS_NAME_LENGTH = 100


def validate_class_names(names: object) -> list[str]:
    """Class names are free text (quotes, newlines, unicode are fine) but not empty, not too long, not repeated."""
    if not isinstance(names, (list, tuple)) or not names:
        raise ApplicationError("A dataset needs at least one class.", {"classes": "empty"})
    errors: dict[str, str] = {}
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            errors[f"classes[{index}]"] = "a class name must be a non-empty string"
        elif len(name) > MAX_CLASS_NAME_LENGTH:
            errors[f"classes[{index}]"] = f"longer than {MAX_CLASS_NAME_LENGTH} characters"
        elif "\x00" in name:
            errors[f"classes[{index}]"] = "contains a NUL character"
        else:
            key = name.strip().casefold()
            if key in seen:
                errors[f"classes[{index}]"] = f"duplicate of classes[{seen[key]}] ({names[seen[key]]!r})"
            seen.setdefault(key, index)
    if errors:
        raise ApplicationError("Invalid class names.", errors)
    return list(names)


def validate_dataset_name(name: object, *, dataset: Dataset | None = None) -> str:
    """A dataset's name: not empty, at most 200 characters, not another dataset's."""
    if not isinstance(name, str) or not name.strip():
        raise ApplicationError("A dataset needs a name.", {"name": "empty"})
    if len(name) > 200:
        raise ApplicationError("Dataset name is too long.", {"name": "at most 200 characters"})
    if "\x00" in name:
        raise ApplicationError("A dataset name may not contain a NUL character.", {"name": "NUL"})
    others = Dataset.objects.filter(name=name)
    if dataset is not None:
        others = others.exclude(pk=dataset.pk)
    if others.exists():
        raise ApplicationError(f"A dataset named {name!r} already exists.", {"name": "taken"})
    return name


@transaction.atomic
def dataset_create(*, name: str, class_names: list[str], description: str = "", created_by: Actor = None) -> Dataset:
    require(created_by, "datasets.add_dataset", message="You may not create datasets.")
    validate_dataset_name(name)
    names = validate_class_names(class_names)
    dataset = Dataset.objects.create(name=name, description=description, created_by=created_by)
    grant(created_by, CREATOR_PERMS["dataset"], dataset)
    DatasetClass.objects.bulk_create(
        [DatasetClass(dataset=dataset, name=class_name, position=i) for i, class_name in enumerate(names)]
    )
    return dataset


def check_place(*, location: Point | None = None, footprint: Polygon | None = None) -> None:
    """An image's place is in WGS 84: a longitude/latitude point and a valid polygon."""
    for geom, label in ((location, "location"), (footprint, "footprint")):
        if geom is not None and geom.srid not in (None, 4326):
            raise ApplicationError(f"The {label} must be in WGS 84 (SRID 4326).", {label: f"SRID {geom.srid}"})
    if location is not None and not (-180 <= location.x <= 180 and -90 <= location.y <= 90):
        raise ApplicationError("The location is not a longitude and latitude.", {"location": list(location.coords)})
    if footprint is not None and not footprint.valid:
        raise ApplicationError(
            f"The footprint is not a valid polygon ({footprint.valid_reason}).", {"footprint": "invalid"}
        )


def dataset_image_build(
    *,
    dataset: Dataset,
    content: bytes,
    original_name: str = "",
    location: Point | None = None,
    footprint: Polygon | None = None,
    captured_at: datetime | None = None,
    altitude_m: float | None = None,
    enabled: bool = True,
    source: dict | None = None,
    store: Callable[[bytes, str], None] = store_bytes,
) -> DatasetImage:
    """Check an image (format, size, pixels, full decode, geometry in WGS 84) and store its file (with ``store``)
    under its content hash; the row is not saved. Duplicates are the caller's to check (one query each, or a set).

    What the file itself says about its place and time (GeoTIFF footprint, EXIF GPS and capture time) fills the
    fields the caller left empty; ``image.georeference`` keeps what was found, for reports."""
    decoded = decode_image(content)
    geo = read_georeference(content, decoded.format)
    if location is None and footprint is None:
        location, footprint = geo.location, geo.footprint
        altitude_m = geo.altitude_m if altitude_m is None else altitude_m
    captured_at = geo.captured_at if captured_at is None else captured_at
    check_place(location=location, footprint=footprint)
    image = DatasetImage(
        dataset=dataset,
        original_name=clean_original_name(original_name),
        sha256=decoded.sha256,
        width=decoded.width,
        height=decoded.height,
        enabled=enabled,
        location=location,
        footprint=footprint,
        altitude_m=altitude_m,
        captured_at=captured_at,
        source=source or {},
    )
    # One PUT under a name of its own (its hash and a random part): no request to ask whether the name is taken, and
    # an import that rolls back removes only what it stored, never a file of the same content another one kept.
    image.image.name = dataset_image_upload_to(image, f"{decoded.sha256}-{secrets.token_hex(4)}.{decoded.extension}")
    store(content, image.image.name)
    image.georeference = geo
    return image


def dataset_image_create(*, dataset: Dataset, content: bytes, user: Actor = None, **fields: Any) -> DatasetImage:
    """Add one image (``dataset_image_build``'s fields) to a dataset; ``user`` needs its change permission."""
    require(user, "datasets.change_dataset", dataset, message=f"You may not change dataset {dataset.name!r}.")
    sha256 = hashlib.sha256(content).hexdigest() if content else ""
    if sha256 and DatasetImage.objects.filter(dataset=dataset, sha256=sha256).exists():
        raise ApplicationError("This image is already in the dataset.", {"sha256": sha256})
    image = dataset_image_build(dataset=dataset, content=content, **fields)
    try:
        with transaction.atomic():
            image.save()
    except Exception:
        image.image.storage.delete(image.image.name)  # nothing half-written: no file without its row
        raise
    return image


def validate_box(*, image: DatasetImage, x: Any, y: Any, width: Any, height: Any) -> tuple[float, float, float, float]:
    values = {"x": x, "y": y, "width": width, "height": height}
    errors = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            errors[key] = "must be a finite number"
    if errors:
        raise ApplicationError("Invalid box.", errors)
    if width <= 0 or height <= 0:
        raise ApplicationError("A box must have a positive width and height.", {"width": width, "height": height})
    if x < 0 or y < 0 or x + width > image.width or y + height > image.height:
        raise ApplicationError(
            f"The box ({x}, {y}, {width}, {height}) is not inside the {image.width}x{image.height} image.",
            {"box": [x, y, width, height]},
        )
    return float(x), float(y), float(width), float(height)


def validate_polygon(*, image: DatasetImage, polygon: Any) -> list[list[float]] | None:
    if polygon is None:
        return None
    if not isinstance(polygon, (list, tuple)) or len(polygon) < 3:
        raise ApplicationError("A polygon needs at least three points.", {"polygon": "too few points"})
    points = []
    for point in polygon:
        if (
            not isinstance(point, (list, tuple))
            or len(point) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point)
        ):
            raise ApplicationError("Polygon points are [x, y] pairs of numbers.", {"polygon": repr(point)[:50]})
        px, py = point
        if not (0 <= px <= image.width and 0 <= py <= image.height):
            raise ApplicationError("A polygon point lies outside the image.", {"polygon": [px, py]})
        points.append([float(px), float(py)])
    return points


def annotation_build(
    *,
    image: DatasetImage,
    dataset_class: DatasetClass,
    x: Any,
    y: Any,
    width: Any,
    height: Any,
    polygon: Any = None,
    enabled: bool = True,
    source: dict | None = None,
) -> Annotation:
    """Validate and build (not save) one annotation; used by single and bulk creation alike."""
    if dataset_class.dataset_id != image.dataset_id:
        raise ApplicationError("The class belongs to another dataset.", {"class": dataset_class.name})
    bx, by, bw, bh = validate_box(image=image, x=x, y=y, width=width, height=height)
    return Annotation(
        image=image,
        dataset_class=dataset_class,
        x=bx,
        y=by,
        width=bw,
        height=bh,
        polygon=validate_polygon(image=image, polygon=polygon),
        enabled=enabled,
        source=source or {},
    )


def annotation_create(*, user: Actor = None, **kwargs: Any) -> Annotation:
    """One box (``annotation_build``'s fields); ``user`` needs the change permission on the image's dataset."""
    dataset = kwargs["image"].dataset
    require(user, "datasets.change_dataset", dataset, message=f"You may not change dataset {dataset.name!r}.")
    annotation = annotation_build(**kwargs)
    annotation.save()
    return annotation


@transaction.atomic
def annotation_delete(*, annotation: Annotation, user: Actor = None) -> None:
    """Remove a box for good (disabling keeps it out of training and exports, and can be undone)."""
    dataset = annotation.image.dataset
    require(user, "datasets.change_dataset", dataset, message=f"You may not change dataset {dataset.name!r}.")
    Annotation.objects.filter(pk=annotation.pk).delete()


@transaction.atomic
def dataset_classes_add(*, dataset: Dataset, names: object, user: Actor = None) -> list[DatasetClass]:
    """Append classes after the dataset's last one (existing category ids never move); names follow the rules of
    :func:`validate_class_names`, also against the classes the dataset has."""
    require(user, "datasets.change_dataset", dataset, message=f"You may not change dataset {dataset.name!r}.")
    Dataset.objects.select_for_update().filter(pk=dataset.pk).first()  # one writer of positions at a time
    existing = dataset.class_names()
    if not isinstance(names, (list, tuple)) or not names:
        raise ApplicationError("Name at least one class to add.", {"classes": "empty"})
    validate_class_names(existing + list(names))
    return DatasetClass.objects.bulk_create(
        [DatasetClass(dataset=dataset, name=name, position=len(existing) + i) for i, name in enumerate(names)]
    )


@transaction.atomic
def annotation_update(
    *,
    annotation: Annotation,
    user: Actor = None,
    dataset_class: DatasetClass | None = None,
    x: Any = None,
    y: Any = None,
    width: Any = None,
    height: Any = None,
    polygon: Any = ...,
    enabled: bool | None = None,
) -> Annotation:
    """Change a box's class, geometry or enabled flag. It stays on its image; the class must be one of its
    dataset's, the box inside its image; ``user`` needs the dataset's change permission."""
    annotation = Annotation.objects.select_for_update().select_related("image__dataset").get(pk=annotation.pk)
    image = annotation.image
    require(
        user, "datasets.change_dataset", image.dataset, message=f"You may not change dataset {image.dataset.name!r}."
    )
    if dataset_class is not None and dataset_class.dataset_id != image.dataset_id:
        raise ApplicationError("The class belongs to another dataset.", {"dataset_class": "not of this dataset"})
    box = [
        annotation.x if x is None else x,
        annotation.y if y is None else y,
        annotation.width if width is None else width,
        annotation.height if height is None else height,
    ]
    annotation.x, annotation.y, annotation.width, annotation.height = validate_box(
        image=image, x=box[0], y=box[1], width=box[2], height=box[3]
    )
    if dataset_class is not None:
        annotation.dataset_class = dataset_class
    if polygon is not ...:
        annotation.polygon = validate_polygon(image=image, polygon=polygon)
    if enabled is not None:
        annotation.enabled = bool(enabled)
    annotation.save()
    return annotation


@transaction.atomic
def dataset_image_update(
    *,
    image: DatasetImage,
    user: Actor = None,
    enabled: bool | None = None,
    location: Any = ...,
    footprint: Any = ...,
    captured_at: Any = ...,
) -> DatasetImage:
    """Include an image in training and exports or leave it out, or correct its place and time (``...`` leaves a
    field as it is, None clears it); ``user`` needs the dataset's change permission."""
    require(
        user, "datasets.change_dataset", image.dataset, message=f"You may not change dataset {image.dataset.name!r}."
    )
    changes: dict[str, Any] = {}
    if enabled is not None:
        changes["enabled"] = bool(enabled)
    check_place(location=None if location is ... else location, footprint=None if footprint is ... else footprint)
    if location is not ...:
        changes["location"] = location
    if footprint is not ...:
        changes["footprint"] = footprint
    if captured_at is not ...:
        changes["captured_at"] = captured_at
    if changes:
        DatasetImage.objects.filter(pk=image.pk).update(**changes)
        for key, value in changes.items():
            setattr(image, key, value)
    return image


@transaction.atomic
def dataset_update(
    *, dataset: Dataset, user: Actor = None, name: str | None = None, description: str | None = None
) -> Dataset:
    require(user, "datasets.change_dataset", dataset, message=f"You may not change dataset {dataset.name!r}.")
    if name is not None:
        dataset.name = validate_dataset_name(name, dataset=dataset)
    if description is not None:
        dataset.description = description
    dataset.save()
    return dataset


def annotations_bulk_create(annotations: list[Annotation]) -> list[Annotation]:
    """Save annotations already checked by :func:`annotation_build`."""
    return Annotation.objects.bulk_create(annotations, batch_size=2000)
