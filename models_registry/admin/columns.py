"""The columns and detail fields of the trained-model admin, and the lineage as a user may see it."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from audit.selectors import audit_trail_html
from core.admin import HIDDEN, related_link, related_model_html
from core.charts import epoch_map_chart
from core.formatting import metric

from ..models import TrainedModel
from ..selectors import model_lineage


def lineage_html(obj: TrainedModel, user):
    """Ancestors as a chain, descendants as a nested list; models the user may not see stay anonymous."""
    tree = model_lineage(obj, user)

    def link(node):
        if node.get("id") is None:
            return format_html("{}", node["name"])
        return format_html(
            '<a href="{}">#{} {}</a> <span class="help">mAP50 {}{}</span>',
            reverse("admin:models_registry_trainedmodel_change", args=[node["id"]]),
            node["id"],
            node["name"],
            metric(node.get("bbox_mAP_50")),
            " · published" if node.get("is_published") else "",
        )

    def branch(nodes):
        if not nodes:
            return ""
        return format_html(
            "<ul>{}</ul>", format_html_join("", "<li>{}{}</li>", ((link(n), branch(n["children"])) for n in nodes))
        )

    chain = format_html_join(" → ", "{}", ((link(a),) for a in reversed(tree["ancestors"])))
    return format_html(
        '<div class="lineage"><p>{}{}<strong>this model</strong></p>{}</div>',
        chain,
        " → " if tree["ancestors"] else "",
        branch(tree["descendants"]) or format_html("<p>{}</p>", "No models derived from it."),
    )


class ModelColumns:
    """Display methods of TrainedModelAdmin (a mixin: the admin class keeps configuration, pages and actions)."""

    # --- columns --------------------------------------------------------------------------------------------
    @admin.display(description="published", boolean=True, ordering="is_published")
    def published(self, obj):
        return obj.is_published

    @admin.display(description="mAP", ordering="bbox_mAP")
    def map(self, obj):
        return metric(obj.bbox_mAP)

    @admin.display(description="mAP50", ordering="bbox_mAP_50")
    def map50(self, obj):
        return metric(obj.bbox_mAP_50)

    @admin.display(description="mAP75", ordering="bbox_mAP_75")
    def map75(self, obj):
        return metric(obj.bbox_mAP_75)

    @admin.display(description="base model", ordering="base_model")
    def base_model_link(self, obj):
        return related_model_html(
            obj.base_model_id, getattr(obj.base_model, "name", ""), getattr(obj, "base_model_visible", False)
        )

    @admin.display(description="dataset", ordering="dataset__name")
    def dataset_link(self, obj):
        if obj.dataset_id is None:
            return "—"
        return str(obj.dataset) if getattr(obj, "dataset_visible", False) else HIDDEN

    # --- detail ---------------------------------------------------------------------------------------------
    @admin.display(description="training run")
    def run_link(self, obj):
        if obj.source_run_id is None:
            return "— (registered from files)" if obj.origin == "registered" else "— (run deleted)"
        return related_link(
            obj.source_run_id, getattr(obj, "source_run_visible", False), url_name="admin:training_trainingrun_change"
        )

    @admin.display(description="downloads")
    def downloads(self, obj):
        base = f"/api/trained-models/{obj.pk}/download/?artifact="
        return format_html(
            '<a href="{0}bundle" class="download-bundle">bundle (zip)</a> · '
            '<a href="{0}checkpoint" class="download-checkpoint">checkpoint</a> · '
            '<a href="{0}config" class="download-config">config (Python, for MMDetection)</a> · '
            '<a href="{0}config_json" class="download-config-json">config (JSON)</a> · '
            '<a href="{0}card" class="download-card">model card</a>',
            base,
        )

    @admin.display(description="mAP per epoch")
    def map_chart(self, obj):
        return epoch_map_chart(obj.metrics_history or [])

    @admin.display(description="audit trail")
    def history(self, obj):
        return audit_trail_html(obj)
