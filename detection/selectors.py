"""Reads of detection runs and their detections, as each user may see them (a run's detections are seen by
whoever sees the run)."""

from __future__ import annotations

from django.contrib.gis.geos import Polygon
from django.db.models import QuerySet

from access.rules import visible
from core.errors import ApplicationError
from datasets.selectors import datasets_visible_to
from training.models import TrainingRun

from .models import Detection, IgnoreZone


def detection_runs_visible_to(user) -> QuerySet[TrainingRun]:
    runs = TrainingRun.objects.filter(kind=TrainingRun.Kind.DETECT)
    return visible(user, "training.view_trainingrun", runs)


def ignore_zones_visible_to(user) -> QuerySet[IgnoreZone]:
    return IgnoreZone.objects.filter(dataset__in=datasets_visible_to(user)).select_related("dataset")


def parse_bbox(text: str) -> Polygon:
    """``min_lon,min_lat,max_lon,max_lat`` (WGS 84) as a polygon, or ApplicationError."""
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        raise ApplicationError("bbox is min_lon,min_lat,max_lon,max_lat.", {"bbox": "four numbers"}) from None
    if not (-180 <= x1 < x2 <= 180 and -90 <= y1 < y2 <= 90):
        raise ApplicationError(
            "bbox is min_lon,min_lat,max_lon,max_lat.", {"bbox": "an area inside -180..180, -90..90"}
        )
    return Polygon.from_bbox((x1, y1, x2, y2))


def detections_of(
    run: TrainingRun,
    *,
    bbox: str | None = None,
    classes: list[str] | None = None,
    min_score: float | None = None,
    ignored: bool | None = None,
) -> QuerySet[Detection]:
    rows = Detection.objects.filter(run=run).select_related("orthophoto").order_by("-score", "id")
    if bbox:
        area = parse_bbox(bbox)
        area.srid = 4326
        rows = rows.filter(geometry__intersects=area)
    if classes:
        # A NUL byte can name no class, and PostgreSQL refuses it in a query: such a name matches nothing.
        rows = rows.filter(class_name__in=[name for name in classes if "\x00" not in name])
    if min_score is not None:
        rows = rows.filter(score__gte=min_score)
    if ignored is not None:
        rows = rows.filter(ignored=ignored)
    return rows
