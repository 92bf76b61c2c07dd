"""What the run's map draws: the orthophotos' footprints, the detections and the known sites, as one JSON document
(WGS 84, or the photo's pixels in a run without georeferencing)."""

from __future__ import annotations

import json

from django.contrib.gis.db.models.functions import AsGeoJSON
from django.db.models import QuerySet
from django.urls import reverse
from django.utils.http import urlencode

from datasets.models import Orthophoto
from training.models import TrainingRun

from ..models import Detection, KnownSite

MAP_DETECTIONS = 3000  # the best-scoring detections drawn on a run's map (the list and downloads have all)


def with_outlines(rows: QuerySet[Detection]) -> QuerySet[Detection]:
    """The detections with their outline as GeoJSON from PostGIS (``outline``) instead of their geometry: a page
    of thousands would otherwise build a GEOS polygon per row (bench/review_queue.py measured it)."""
    return rows.defer("geometry").annotate(outline=AsGeoJSON("geometry", precision=8))


def ring_of(detection: Detection) -> list[list[float]]:
    """The outline drawn on the map (a row of ``with_outlines``): the polygon in WGS 84, or the pixel box (x, y) in
    a run without a map."""
    if detection.outline:
        return json.loads(detection.outline)["coordinates"][0]
    x1, y1, x2, y2 = detection.pixel_box
    return [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]


def url_of(name: str, **query: str) -> str:
    """A URL pattern with one id, as a format string: one ``reverse`` for a whole page of rows."""
    return reverse(name, args=[0]).replace("/0/", "/{}/") + (f"?{urlencode(query)}" if query else "")


def map_data(run: TrainingRun) -> dict:
    """Everything the run's map draws, in one JSON document (footprints, detections, known sites)."""
    orthos = list(Orthophoto.objects.filter(pk__in=run.parameters.get("orthophotos") or []).order_by("id"))
    pixels = (run.export_summary or {}).get("coordinates") == "pixel"
    footprints = []
    for o in orthos:
        if pixels:
            ring = [[0, 0], [o.width, 0], [o.width, o.height], [0, o.height], [0, 0]]
        elif o.footprint is not None:
            ring = [list(point) for point in o.footprint.exterior_ring.coords]
        else:
            continue
        footprints.append({"id": o.pk, "name": o.name, "ring": ring})
    rows = with_outlines(Detection.objects.filter(run=run).order_by("-score", "id"))[:MAP_DETECTIONS]
    crop, page = url_of("detection-crop"), url_of("admin:detection_detection_change")
    detections = [
        {
            "id": d.pk,
            "class": d.class_name,
            "score": round(d.score, 4),
            "ring": ring_of(d),
            "ignored": d.ignored,
            "state": d.state,
            "crop": crop.format(d.pk),
            "page": page.format(d.pk),
        }
        for d in rows
    ]
    sites = [
        {"id": s.pk, "label": s.label, "found": s.found, "rings": [list(map(list, p[0])) for p in s.geometry.coords]}
        for s in KnownSite.objects.filter(run=run).order_by("id")
    ]
    return {
        "coordinates": "pixel" if pixels else "map",
        "classes": list(run.parameters.get("classes") or []),
        "threshold": run.parameters.get("score_threshold", 0),
        "footprints": footprints,
        "detections": detections,
        "total": (run.export_summary or {}).get("detections", len(detections)),
        "sites": sites,
    }
