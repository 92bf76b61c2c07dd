"""How a detection run did against the known sites of its area, in the console: the figures at the run's threshold,
the curve over every threshold, the missed sites and the false detections with their crops, and the same figures
side by side on the models' compare page."""

from __future__ import annotations

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from access.rules import visible
from core.charts import Series, line_chart
from core.formatting import metric
from datasets.selectors import datasets_visible_to
from training.models import TrainingRun

from ..models import Detection, KnownSite

SHOWN_CROPS = 48  # missed sites or false detections shown with their crops on a run's page


def sites_of(run: TrainingRun) -> dict:
    """The run's site figures: against its known sites, or else against its review (``detection.review_figures``:
    the same keys)."""
    summary = run.export_summary or {}
    return summary.get("sites") or summary.get("review") or {}


def by_review(run: TrainingRun) -> bool:
    return not (run.export_summary or {}).get("sites") and bool((run.export_summary or {}).get("review"))


def figures_table(run: TrainingRun):
    sites = sites_of(run)
    if not sites:
        return "— (the run was given no known sites, and nothing of it is reviewed yet)"
    threshold = sites["threshold_for_target"]
    reviewed = by_review(run)
    rows = [
        (
            "reviewed sites (confirmed, and drawn by reviewers)" if reviewed else "known sites on the orthophotos",
            f"{sites['sites']} ({sites['drawn']} drawn by reviewers)" if reviewed else sites["sites"],
        ),
        ("found", f"{sites['found']} (site recall {metric(sites['recall'])})"),
        (
            "detections",
            f"{sites['detections']} above the score threshold {sites['threshold']} "
            f"(not counting ignore zones): {sites['true']} on a site, {sites['false']} false",
        ),
        ("precision", metric(sites["precision"])),
        ("false detections per km²", sites["false_per_km2"] if sites["false_per_km2"] is not None else "—"),
        ("area covered", f"{sites['area_km2']:.4f} km²"),
        (
            f"score threshold reaching recall {sites['target_recall']}",
            threshold if threshold is not None else "not reached at any threshold",
        ),
        (
            "matching rule",
            sites["match_rule"] if reviewed else f"{sites['match_rule']} at least {sites['site_match']}",
        ),
    ]
    if reviewed:
        rows.append(("not reviewed yet", f"{sites['undecided']} of the model's detections"))
    return format_html(
        '<table class="kv" id="site-figures">{}</table>',
        format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows),
    )


def curve_charts(curves: dict[str, list[dict]]) -> str:
    """Precision against site recall, and both against the score threshold (one line per run or model)."""
    pr = line_chart(
        [Series(label, [(p["recall"], p["precision"]) for p in curve]) for label, curve in curves.items()],
        title="Sites: precision against recall",
        x_label="site recall",
        y_label="precision",
        y_min=0,
        y_max=1,
    )
    by_threshold = line_chart(
        [
            Series(f"{what} · {label}" if len(curves) > 1 else what, [(p["threshold"], p[what]) for p in curve])
            for label, curve in curves.items()
            for what in ("recall", "precision")
        ],
        title="Sites: recall and precision by score threshold",
        x_label="score threshold",
        y_label="share",
        y_min=0,
        y_max=1,
    )
    return mark_safe(f'<div class="pr-charts" id="site-curves">{pr}{by_threshold}</div>')


def crop_figure(url: str, caption: str, link: str = ""):
    image = format_html('<img src="{}" loading="lazy" width="160" height="160" alt="">', url)
    if link:
        image = format_html('<a href="{}">{}</a>', link, image)
    return format_html('<figure class="crop">{}<figcaption>{}</figcaption></figure>', image, caption)


def crops_html(figures: list, total: int, what: str):
    if not figures:
        return "—"
    more = (
        format_html("<p class='help'>The first {} of {} {}.</p>", len(figures), total, what)
        if total > len(figures)
        else ""
    )
    return format_html('{}<div class="crops">{}</div>', more, mark_safe("".join(figures)))


def missed_sites_html(run: TrainingRun):
    if by_review(run):  # the sites the model missed are those reviewers drew
        drawn = Detection.objects.filter(run=run, origin=Detection.Origin.REVIEWER, state=Detection.State.CONFIRMED)
        rows = list(drawn.order_by("id")[:SHOWN_CROPS])
        figures = [detection_figure(d) for d in rows]
        return crops_html(figures, drawn.count(), "sites drawn by reviewers")
    ids = sites_of(run).get("missed_sites") or []
    sites = KnownSite.objects.filter(run=run, pk__in=ids[:SHOWN_CROPS]).order_by("id")
    figures = [crop_figure(reverse("known-site-crop", args=[s.pk]), f"{s.label} ({s.class_name})") for s in sites]
    return crops_html(figures, len(ids), "missed sites")


def detection_figure(d: Detection):
    return crop_figure(
        reverse("detection-crop", args=[d.pk]),
        f"#{d.pk} {d.class_name} {d.score:.2f}",
        reverse("admin:detection_detection_change", args=[d.pk]),
    )


def false_detections_html(run: TrainingRun):
    if by_review(run):  # the false detections are those reviewers rejected
        rejected = Detection.objects.filter(run=run, state=Detection.State.REJECTED, ignored=False)
        rows = rejected.order_by("-score", "id")[:SHOWN_CROPS]
        return crops_html([detection_figure(d) for d in rows], rejected.count(), "rejected detections, best first")
    ids = sites_of(run).get("false_detections") or []
    rows = Detection.objects.filter(run=run, pk__in=ids).order_by("-score", "id")[:SHOWN_CROPS]
    return crops_html([detection_figure(d) for d in rows], len(ids), "false detections, best scores first")


def area_key(run: TrainingRun) -> tuple:
    return (run.dataset_id, tuple(sorted(run.parameters.get("orthophotos") or [])))


def compare_rows(user, models: list) -> tuple[list[tuple[str, list]], list[str]]:
    """For every area (the same orthophotos) that two or more of ``models`` were run on, with known sites: each
    model's newest such run's site figures, in the models' columns, and the curves drawn together."""
    runs = visible(
        user,
        "training.view_trainingrun",
        TrainingRun.objects.filter(
            kind=TrainingRun.Kind.DETECT, status=TrainingRun.Status.SUCCEEDED, evaluated_model__in=models
        ),
    ).order_by("-finished_at", "-id")
    newest: dict[tuple, dict[int, TrainingRun]] = {}
    for run in runs.select_related("dataset"):
        if sites_of(run):
            newest.setdefault(area_key(run), {}).setdefault(run.evaluated_model_id, run)
    seen_datasets = set(datasets_visible_to(user).values_list("pk", flat=True))
    rows, charts = [], []
    for (dataset_id, orthophotos), by_model in newest.items():
        if len(by_model) < 2:
            continue
        first = next(iter(by_model.values()))
        area = first.dataset.name if dataset_id in seen_datasets else f"dataset #{dataset_id}"
        area = f"{area}, {len(orthophotos)} orthophoto{'s' if len(orthophotos) != 1 else ''}"
        figures = [sites_of(by_model[m.pk]) if m.pk in by_model else None for m in models]
        for key, label in (
            ("recall", "site recall"),
            ("precision", "precision"),
            ("false_per_km2", "false detections per km²"),
            ("threshold_for_target", "threshold for the target recall"),
        ):
            rows.append((f"{label} · {area}", [f.get(key, "—") if f else "—" for f in figures]))
        curves = {f"Model #{m.pk}": sites_of(by_model[m.pk])["curve"] for m in models if m.pk in by_model}
        charts.append(curve_charts(curves))
    return rows, charts
