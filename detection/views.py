"""Crops of what detection runs found and missed, for the admin's pages: seen by whoever sees the run (the same
answer, 404, for a missing and a hidden one)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.views.decorators.http import require_GET

from core.errors import ApplicationError
from datasets.models import Orthophoto

from .crops import REVIEW_SIDE, Target, crop_render, detection_target, site_target
from .models import Detection, KnownSite
from .selectors import detection_runs_visible_to


def picture(run_id: int, target: Target | None, *, review: bool = False) -> HttpResponse:
    if target is None:
        raise Http404("No orthophoto of the run covers it.")
    try:
        drawn = crop_render(run_id, target, side=REVIEW_SIDE, outline=False) if review else crop_render(run_id, target)
    except ApplicationError as exc:
        raise Http404(exc.message) from None
    response = HttpResponse(drawn, content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=300"
    return response


@require_GET
@login_required
def detection_crop(request, pk: int):
    runs = detection_runs_visible_to(request.user)
    detection = Detection.objects.filter(pk=pk, run__in=runs).select_related("orthophoto").first()
    if detection is None:
        raise Http404
    return picture(detection.run_id, detection_target(detection), review=request.GET.get("for") == "review")


@require_GET
@login_required
def site_crop(request, pk: int):
    runs = detection_runs_visible_to(request.user)
    site = KnownSite.objects.filter(pk=pk, run__in=runs).select_related("run").first()
    if site is None:
        raise Http404
    orthophotos = list(Orthophoto.objects.filter(pk__in=site.run.parameters.get("orthophotos") or []))
    return picture(site.run_id, site_target(site, orthophotos))
