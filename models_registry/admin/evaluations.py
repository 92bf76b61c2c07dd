"""The operator console for evaluations: per-class table (sortable), precision-recall charts, confusion matrix,
and the gallery of validation images with what was found, missed and wrongly detected. Read-only."""

from __future__ import annotations

from django.contrib import admin
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from access.rules import NotVisible, can, get_visible
from core.admin import ReadOnlyAdmin
from core.charts import confusion_table, pr_chart
from core.formatting import metric

from ..evaluations import COLOURS, GALLERY_ORDERS, gallery_images, gallery_render
from ..models import Evaluation
from ..selectors import evaluations_visible_to

STATISTICS = "models_registry.view_trainedmodel_statistics"
PER_CLASS_COLUMNS = (
    ("class", "Class"),
    ("ap", "AP"),
    ("ap50", "AP50"),
    ("ap75", "AP75"),
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("gt_boxes", "Boxes"),
    ("detections", "Detections"),
)
GALLERY_PAGE = 48


def sorted_per_class(rows: list[dict], sort: str) -> list[dict]:
    """Rows by a column (``-ap50``: descending); missing values last either way."""
    key = sort.lstrip("-")
    if key not in dict(PER_CLASS_COLUMNS):
        return rows
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]
    return sorted(present, key=lambda r: r[key], reverse=sort.startswith("-")) + missing


def results_context(evaluation: Evaluation, *, sort: str = "", base_url: str = "") -> dict:
    """What the results block of a page shows (the evaluation's page and a model's page share it)."""
    headers = []
    for key, label in PER_CLASS_COLUMNS:
        next_sort = f"-{key}" if sort != f"-{key}" and key != "class" else key
        if key == "class" and sort == "class":
            next_sort = "-class"
        headers.append(
            {"label": label, "url": f"{base_url}?sort={next_sort}#per-class", "active": sort.lstrip("-") == key}
        )
    rows = [
        {
            "class": r["class"],
            "cells": [
                metric(r.get(k)) if k not in ("class", "gt_boxes", "detections") else r.get(k)
                for k, _ in PER_CLASS_COLUMNS
            ],
        }
        for r in sorted_per_class(list(evaluation.per_class), sort)
    ]
    return {
        "evaluation": evaluation,
        "per_class_headers": headers,
        "per_class_rows": rows,
        "overall": [(k, metric(v)) for k, v in (evaluation.metrics or {}).items()],
        "pr_charts": [pr_chart(curves, iou=iou) for iou, curves in (evaluation.pr_curves or {}).items() if curves],
        "confusion": confusion_table(evaluation.confusion or {}),
        "gallery_url": reverse("admin:models_registry_evaluation_gallery", args=[evaluation.pk]),
    }


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Results of models on annotated images. Made by training runs (their validation split) and evaluation runs
    (the "Evaluate" button of a model, or ``manage.py evaluate``)."""

    list_display = ("id", "model", "dataset", "kind", "split", "map50", "images_count", "created_at")
    list_filter = ("kind",)
    list_select_related = ("model", "dataset")
    search_fields = ("model__name", "dataset__name", "split")

    def get_queryset(self, request):
        return evaluations_visible_to(request.user, super().get_queryset(request)).defer(
            "pr_curves", "confusion", "per_class"
        )

    def has_module_permission(self, request):
        return can(request.user, STATISTICS)

    def has_view_permission(self, request, obj=None):
        return can(request.user, STATISTICS)

    @admin.display(description="mAP50")
    def map50(self, obj):
        return metric((obj.metrics or {}).get("bbox_mAP_50"))

    @admin.display(description="images")
    def images_count(self, obj):
        return (obj.counts or {}).get("images")

    def get_urls(self):
        return [
            path(
                "<int:pk>/gallery/",
                self.admin_site.admin_view(self.gallery_page),
                name="models_registry_evaluation_gallery",
            ),
            path(
                "<int:pk>/gallery/<int:row>.jpg",
                self.admin_site.admin_view(self.picture),
                name="models_registry_evaluation_picture",
            ),
        ] + super().get_urls()

    def _evaluation(self, request, pk) -> Evaluation:
        if not can(request.user, STATISTICS):
            raise Http404
        try:
            return get_visible(evaluations_visible_to(request.user), pk, "evaluation")
        except NotVisible as exc:
            raise Http404(str(exc)) from None

    def change_view(self, request, object_id, form_url="", extra_context=None):
        evaluation = self._evaluation(request, object_id)
        context = {
            **self.admin_site.each_context(request),
            **results_context(evaluation, sort=request.GET.get("sort", ""), base_url=request.path),
            "title": str(evaluation),
            "opts": self.model._meta,
            "model_url": reverse("admin:models_registry_trainedmodel_change", args=[evaluation.model_id]),
        }
        return TemplateResponse(request, "admin/models_registry/evaluation/detail.html", context)

    def gallery_page(self, request, pk):
        """Validation images with boxes and detections drawn, worst first; filter by class. Pictures are drawn on
        first view and cached; the page itself reads one page of rows."""
        evaluation = self._evaluation(request, pk)
        classes = (evaluation.confusion or {}).get("labels", [])[:-1]
        chosen = request.GET.get("class", "")
        order = request.GET.get("order", "worst")
        order = order if order in GALLERY_ORDERS else "worst"
        rows = gallery_images(
            evaluation, class_index=classes.index(chosen) if chosen in classes else None, order=order
        ).only(
            "id",
            "evaluation_id",
            "file_name",
            "width",
            "height",
            "true_positives",
            "false_positives",
            "false_negatives",
            "errors",
        )
        page = Paginator(rows, GALLERY_PAGE).get_page(request.GET.get("page"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Gallery of evaluation #{evaluation.pk}",
            "opts": self.model._meta,
            "evaluation": evaluation,
            "classes": classes,
            "chosen": chosen if chosen in classes else "",
            "order": order,
            "orders": list(GALLERY_ORDERS),
            "page": page,
            "legend": [
                ("#{:02x}{:02x}{:02x}".format(*COLOURS[key]), label)
                for key, label in (
                    ("found", "box found"),
                    ("missed", "box missed"),
                    ("wrong_class", "wrong class"),
                    ("tp", "true positive"),
                    ("fp", "false detection"),
                )
            ],
            "evaluation_url": reverse("admin:models_registry_evaluation_change", args=[evaluation.pk]),
        }
        return TemplateResponse(request, "admin/models_registry/evaluation/gallery.html", context)

    def picture(self, request, pk, row):
        evaluation = self._evaluation(request, pk)
        item = evaluation.images.filter(pk=row).first()
        if item is None:
            raise Http404("No such gallery image.")
        try:
            picture = gallery_render(item, classes=(evaluation.confusion or {}).get("labels", [])[:-1])
        except FileNotFoundError:
            raise Http404("The image file is no longer in storage.") from None
        response = HttpResponse(picture, content_type="image/jpeg")
        response["Cache-Control"] = "private, max-age=3600"
        return response


def evaluation_link(evaluation: Evaluation | None):
    if evaluation is None:
        return "—"
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:models_registry_evaluation_change", args=[evaluation.pk]), evaluation
    )
