"""The operator console for predict checks: the upload form of a model's "Predict on an image" page, and the
read-only pages of the predictions (boxes found, the image with them drawn)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils.html import format_html, format_html_join

from access.rules import can
from core.admin import ReadOnlyAdmin

from ..models import Prediction
from ..selectors import predictions_visible_to


class PredictForm(forms.Form):
    image = forms.FileField(help_text="An image (JPEG, PNG, TIFF, BMP or WebP); the model runs on it in a worker.")
    score_threshold = forms.FloatField(initial=0.3, min_value=0.0, max_value=1.0)


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Predict checks: the boxes a model found on an uploaded image, drawn on it. Read-only; made from a model's
    page ("Predict on an image")."""

    list_display = ("id", "model", "status", "original_name", "boxes", "created_by", "created_at")
    list_filter = ("status",)
    fields = (
        "model",
        "status",
        "original_name",
        "score_threshold",
        "boxes_table",
        "preview_image",
        "error_message",
        "created_by",
        "created_at",
        "finished_at",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return predictions_visible_to(request.user, super().get_queryset(request).select_related("model"))

    def has_module_permission(self, request):
        return can(request.user, "models_registry.predict_trainedmodel")

    def has_view_permission(self, request, obj=None):
        if not can(request.user, "models_registry.predict_trainedmodel"):
            return False
        return obj is None or predictions_visible_to(request.user).filter(pk=obj.pk).exists()

    @admin.display(description="boxes")
    def boxes(self, obj):
        return len((obj.result or {}).get("boxes", [])) if obj.status == "succeeded" else "—"

    @admin.display(description="boxes found")
    def boxes_table(self, obj):
        if not obj.is_finished:
            return format_html(
                '<span id="prediction-pending">{} — this page reloads until it is done.</span>'
                '<meta http-equiv="refresh" content="2">',
                obj.get_status_display(),
            )
        rows = [
            (b["class_name"], f"{b['score']:.3f}", ", ".join(f"{v:.0f}" for v in b["bbox"]))
            for b in (obj.result or {}).get("boxes", [])
        ]
        if not rows:
            return "none above the threshold"
        return format_html(
            '<table class="kv" id="prediction-boxes"><tr><th>class</th><th>score</th><th>x1, y1, x2, y2</th></tr>'
            "{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @admin.display(description="preview")
    def preview_image(self, obj):
        if not obj.preview:
            return "—"
        return format_html(
            '<img src="/api/predictions/{}/preview/" alt="predicted boxes" id="prediction-preview" '
            'style="max-width: 100%">',
            obj.pk,
        )
