"""A run judged by its review, where it was given no known sites: the reviewed sites become the known sites.

- **Sites**: the confirmed detections (the model's, corrected or not) and the sites reviewers drew (the model
  missed those).
- **At a score threshold**: site recall = the model's confirmed detections at or above it / all sites; precision
  = confirmed / (confirmed + rejected) at or above it; false detections per km² = rejected / the area covered.
  Undecided detections count for nothing, and the figures say how many are left (``undecided``).
- Recomputed after every decision (a few aggregate reads) and stored with the run (``summary.review``), with the
  same keys as the known-sites figures, so the console, the API and the compare page read both alike.
"""

from __future__ import annotations

import json

from django.db import connection
from django.db.models.expressions import RawSQL

from training.models import TrainingRun

from .models import Detection, KnownSite
from .sites import COVERED_SQL, CURVE_POINTS

MATCH_RULE = "the review: confirmed detections and drawn sites are the sites"


def review_figures(run: TrainingRun) -> dict | None:
    """The figures of ``run`` against its review; None when it has known sites (those figures stand) or when
    nothing is reviewed yet."""
    if KnownSite.objects.filter(run=run).exists():
        return None
    rows = list(Detection.objects.filter(run=run, ignored=False).values_list("score", "state", "origin"))
    model = [(score, state) for score, state, origin in rows if origin == Detection.Origin.MODEL]
    drawn = sum(1 for _s, state, origin in rows if origin == Detection.Origin.REVIEWER and state == "confirmed")
    decided = [(score, state) for score, state in model if state != Detection.State.NEW]
    if not decided and not drawn:
        return None
    sites = sum(1 for _s, state in model if state == Detection.State.CONFIRMED) + drawn
    with connection.cursor() as cursor:
        cursor.execute(COVERED_SQL, {"ids": list(run.parameters.get("orthophotos") or [])})
        area_km2 = float(cursor.fetchone()[0]) / 1e6

    def at(threshold: float) -> dict:
        kept = [state for score, state in decided if score >= threshold]
        true, false = kept.count(Detection.State.CONFIRMED), kept.count(Detection.State.REJECTED)
        return {
            "threshold": round(threshold, 4),
            "detections": true + false,
            "true": true,
            "false": false,
            "found": true,
            "recall": round(true / sites, 4) if sites else None,
            "precision": round(true / (true + false), 4) if true + false else None,
        }

    threshold = float(run.parameters.get("score_threshold") or 0)
    target = float(run.parameters.get("target_recall") or 0.9)
    at_run = at(threshold)
    levels = sorted({score for score, _ in decided}, reverse=True)
    curve = [at(t) for t in levels[:: max(1, len(levels) // CURVE_POINTS)]]
    reaching = [p for p in curve if p["recall"] is not None and p["recall"] >= target]
    return {
        "match_rule": MATCH_RULE,
        "site_match": None,
        "sites": sites,
        **at_run,
        "drawn": drawn,
        "undecided": sum(1 for _s, state in model if state == Detection.State.NEW),
        "area_km2": round(area_km2, 6),
        "false_per_km2": round(at_run["false"] / area_km2, 3) if area_km2 else None,
        "target_recall": target,
        "threshold_for_target": reaching[0]["threshold"] if reaching else None,
        "curve": curve,
    }


def review_figures_store(run: TrainingRun) -> dict | None:
    """Recompute and store ``summary.review`` in one statement on its own key (jsonb_set): a decision made at the
    same moment, or the worker's own summary, is not overwritten."""
    figures = review_figures(run)
    TrainingRun.objects.filter(pk=run.pk).update(
        export_summary=RawSQL(
            "jsonb_set(COALESCE(export_summary, '{}'::jsonb), '{review}', %s::jsonb)", [json.dumps(figures)]
        )
    )
    return figures
