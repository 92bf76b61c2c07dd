"""The review queue of a detection run: its detections one at a time, each with a large crop to correct on and its
place on a small map; filtered by score band, class, state or map area. The page only lays the queue out: every
decision goes through the API (``PATCH /api/detections/{id}/``, ``POST /api/detections/``), which calls the
review services, so the keyboard and a script are held to the same rules."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import json_script

from access.rules import can
from core.errors import ApplicationError
from datasets.models import Orthophoto

from ..crops import Target, crop_window
from ..models import Detection
from ..selectors import detection_runs_visible_to, detections_of, parse_bbox
from .maps import ring_of, url_of, with_outlines

QUEUE_LIMIT = 500  # detections laid out on one page; the rest come with the next page of the same filter
STATES = ("new", "confirmed", "rejected", "all")


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value <= 1 else None


def queue(run, query) -> tuple[list[Detection], int, dict]:
    """The run's detections the query asks for (best score first), one page of them, and the filter as read."""
    chosen = {
        "min_score": _number(query.get("min_score")),
        "max_score": _number(query.get("max_score")),
        "class": query.get("class") or "",
        "state": query.get("state") if query.get("state") in STATES else "new",
        "bbox": query.get("bbox") or "",
    }
    if chosen["bbox"]:
        try:
            parse_bbox(chosen["bbox"])
        except ApplicationError:
            chosen["bbox"] = ""  # an unreadable area is no filter: the form shows it empty again
    rows = detections_of(
        run,
        bbox=chosen["bbox"] or None,
        classes=[chosen["class"]] if chosen["class"] else None,
        min_score=chosen["min_score"],
    )
    if chosen["max_score"] is not None:
        rows = rows.filter(score__lte=chosen["max_score"])
    if chosen["state"] != "all":
        rows = rows.filter(state=chosen["state"])
    try:
        start = max(0, int(query.get("start") or 0))
    except ValueError:
        start = 0
    total = rows.count()
    # The orthophotos come once per page (the view's): one built per row, with its footprint, was most of the time.
    page = with_outlines(rows.select_related(None))
    return list(page[start : start + QUEUE_LIMIT]), total, {**chosen, "start": start}


def queue_item(d: Detection, orthophotos: dict[int, Orthophoto], crop_url: str) -> dict:
    x1, y1, x2, y2 = d.pixel_box
    target = Target(orthophotos[d.orthophoto_id], (x1, y1, x2, y2), "detection", "")
    return {
        "id": d.pk,
        "class": d.class_name,
        "score": round(d.score, 4),
        "state": d.state,
        "origin": d.origin,
        "orthophoto": d.orthophoto_id,
        "box": list(d.pixel_box),
        "window": list(crop_window(target)),
        "crop": crop_url.format(d.pk),
        "ring": ring_of(d),
    }


def review_view(model_admin, request, pk: int):
    run = detection_runs_visible_to(request.user).filter(pk=pk).select_related("evaluated_model").first()
    if run is None:
        raise Http404("No such detection run.")
    if not can(request.user, "detection.review_detection"):
        raise PermissionDenied
    rows, total, chosen = queue(run, request.GET)
    orthos = list(Orthophoto.objects.filter(pk__in=run.parameters.get("orthophotos") or []).order_by("id"))
    by_id = {o.pk: o for o in orthos}
    crop_url = url_of("detection-crop", **{"for": "review"})
    data = {
        "run": run.pk,
        "classes": list(run.evaluated_model.class_names) if run.evaluated_model else [],
        "coordinates": (run.export_summary or {}).get("coordinates", "map"),
        "footprints": [
            {"id": o.pk, "name": o.name, "ring": [list(p) for p in o.footprint.exterior_ring.coords]}
            for o in orthos
            if o.footprint is not None
        ],
        "orthophotos": [{"id": o.pk, "name": o.name} for o in orthos],
        "items": [queue_item(d, by_id, crop_url) for d in rows],
        "total": total,
    }
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Review detection run #{run.pk} {run.name}",
        "run": run,
        "chosen": chosen,
        "states": STATES,
        "classes": data["classes"],
        "total": total,
        "shown": len(rows),
        "next_start": chosen["start"] + len(rows) if chosen["start"] + len(rows) < total else None,
        "queue_json": json_script(data, "review-data"),
        "opts": model_admin.model._meta,
        "run_url": reverse("admin:detection_detectionrun_change", args=[run.pk]),
        "has_view_permission": True,
    }
    return TemplateResponse(request, "admin/detection/review.html", context)
