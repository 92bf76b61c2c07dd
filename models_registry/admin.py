"""The operator console for trained models: metrics, lineage, publish / unpublish, downloads, comparison."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from audit.admin import audit_trail_html
from dumpsite.access import can
from dumpsite.admin_access import AccessControlledAdmin, VisibleRelatedOnlyFilter, parse_ids
from dumpsite.charts import Series, line_chart
from dumpsite.errors import ApplicationError
from dumpsite.formatting import metric

from . import services
from .models import TrainedModel
from .selectors import model_lineage, models_visible_to, related_visibility


HIDDEN = "(not visible to you)"



def related_model_html(pk: int | None, name: str, is_visible: bool):
    """A link to a related model, or a neutral mark when the user may not see it: its name never shows."""
    if pk is None:
        return "—"
    if not is_visible:
        return HIDDEN
    return format_html('<a href="{}">#{} {}</a>', reverse("admin:models_registry_trainedmodel_change", args=[pk]),
                       pk, name)


def epoch_map_chart(history: list[dict]) -> str:
    """mAP50, mAP and mAP75 per epoch from a metrics history (a run's or a model's)."""
    return mark_safe(line_chart(
        [Series(name, [(e["epoch"], e.get(key)) for e in history])
         for name, key in (("mAP50", "bbox_mAP_50"), ("mAP", "bbox_mAP"), ("mAP75", "bbox_mAP_75"))],
        title="Validation mAP", x_label="epoch", y_label="mAP", y_min=0, y_max=1, x_integer=True))


def lineage_html(obj: TrainedModel, user):
    """Ancestors as a chain, descendants as a nested list; models the user may not see stay anonymous."""
    tree = model_lineage(obj, user)

    def link(node):
        if node.get("id") is None:
            return format_html("{}", node["name"])
        return format_html('<a href="{}">#{} {}</a> <span class="help">mAP50 {}{}</span>',
                           reverse("admin:models_registry_trainedmodel_change", args=[node["id"]]),
                           node["id"], node["name"], metric(node.get("bbox_mAP_50")),
                           " · published" if node.get("is_published") else "")

    def branch(nodes):
        if not nodes:
            return ""
        return format_html("<ul>{}</ul>", format_html_join(
            "", "<li>{}{}</li>", ((link(n), branch(n["children"])) for n in nodes)))

    chain = format_html_join(" → ", "{}", ((link(a),) for a in reversed(tree["ancestors"])))
    return format_html('<div class="lineage"><p>{}{}<strong>this model</strong></p>{}</div>',
                       chain, " → " if tree["ancestors"] else "",
                       branch(tree["descendants"]) or format_html("<p>{}</p>", "No models derived from it."))


@admin.register(TrainedModel)
class TrainedModelAdmin(AccessControlledAdmin, admin.ModelAdmin):
    change_list_template = "admin/models_registry/trainedmodel/change_list.html"
    list_display = ("id", "name", "published", "map", "map50", "map75", "architecture", "base_model_link",
                    "dataset_link", "created_by", "created_at")
    list_display_links = ("id", "name")
    list_filter = ("is_published", "architecture", "origin", ("dataset", VisibleRelatedOnlyFilter))
    search_fields = ("name", "description")
    list_select_related = ("base_model", "dataset", "created_by")
    actions = ["publish", "unpublish", "compare"]
    fieldsets = [
        (None, {"fields": ("name", "description", "published", "publish_buttons", "origin", "architecture",
                           "class_names", "dataset_link", "run_link", "downloads")}),
        ("Metrics (best epoch)", {"fields": ("best_epoch", "bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s",
                                             "bbox_mAP_m", "bbox_mAP_l", "map_chart")}),
        ("Lineage", {"fields": ("lineage",)}),
        ("Artifacts", {"fields": ("checkpoint_sha256", "config_sha256", "parameter_count", "training_duration",
                                  "created_by", "created_at")}),
        ("History", {"fields": ("history",)}),
    ]
    readonly_fields = ("published", "publish_buttons", "origin", "architecture", "class_names", "dataset_link", "run_link",
                       "downloads", "best_epoch", "bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m",
                       "bbox_mAP_l", "map_chart", "lineage", "checkpoint_sha256", "config_sha256", "parameter_count",
                       "training_duration", "created_by", "created_at", "history")

    class Media:
        css = {"all": ("admin_console/console.css",)}

    def visible_queryset(self, request, queryset):
        user = request.user
        return models_visible_to(user, queryset).annotate(
            **related_visibility(user))

    def save_with_service(self, request, obj, data):
        services.trained_model_update(model=obj, name=data.get("name"), description=data.get("description"),
                                      user=request.user)

    def has_delete_permission(self, request, obj=None):
        return False  # deletion goes through trained_model_delete (API), which keeps lineages and published models

    def has_add_permission(self, request):
        return False  # models come from runs or `manage.py register_base_model`, which check their files

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not can(request.user, "models_registry.publish_trainedmodel"):
            actions.pop("publish", None)
            actions.pop("unpublish", None)
        return actions

    def get_urls(self):
        return [
            path("compare/", self.admin_site.admin_view(self.compare_page), name="models_registry_trainedmodel_compare"),
            path("lineage/", self.admin_site.admin_view(self.lineage_page), name="models_registry_trainedmodel_lineage"),
            path("<int:pk>/publish/", self.admin_site.admin_view(self.publish_page),
                 name="models_registry_trainedmodel_publish"),
        ] + super().get_urls()

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
        return related_model_html(obj.base_model_id, getattr(obj.base_model, "name", ""),
                                  getattr(obj, "base_model_visible", False))

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
        if not getattr(obj, "source_run_visible", False):
            return HIDDEN
        return format_html('<a href="{}">#{}</a>', reverse("admin:training_trainingrun_change",
                                                          args=[obj.source_run_id]), obj.source_run_id)

    @admin.display(description="downloads")
    def downloads(self, obj):
        base = f"/api/trained-models/{obj.pk}/download/?artifact="
        return format_html('<a href="{}checkpoint" class="download-checkpoint">checkpoint</a> · '
                           '<a href="{}config" class="download-config">config</a>', base, base)

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            obj.admin_request = request  # per-request, per-instance: the ModelAdmin itself is shared by threads
        return obj

    @admin.display(description="publication")
    def publish_buttons(self, obj):
        request = obj.admin_request
        if not can(request.user, "models_registry.publish_trainedmodel", obj):
            return ""
        # A button of the change form posting elsewhere (formaction): forms cannot nest.
        return format_html(
            '<button type="submit" formaction="{}" formmethod="post" name="{}" value="1" class="button" '
            'id="publish-toggle">{}</button>',
            reverse("admin:models_registry_trainedmodel_publish", args=[obj.pk]),
            "unpublish" if obj.is_published else "publish", "Unpublish" if obj.is_published else "Publish")

    @admin.display(description="mAP per epoch")
    def map_chart(self, obj):
        return epoch_map_chart(obj.metrics_history or [])

    @admin.display(description="lineage")
    def lineage(self, obj):
        return lineage_html(obj, obj.admin_request.user)


    @admin.display(description="audit trail")
    def history(self, obj):
        return audit_trail_html(obj)

    # --- pages and actions ----------------------------------------------------------------------------------
    def publish_page(self, request, pk):
        if request.method != "POST":
            return redirect("admin:models_registry_trainedmodel_change", pk)
        model = models_visible_to(request.user).filter(pk=pk).first()
        if model is None:
            raise Http404
        self._toggle(request, [model], publish="publish" in request.POST)
        return redirect("admin:models_registry_trainedmodel_change", pk)

    def _toggle(self, request, models, *, publish: bool):
        for model in models:  # the service checks the user's permission on each one
            try:
                if publish:
                    services.trained_model_publish(model=model, user=request.user)
                else:
                    services.trained_model_unpublish(model=model, user=request.user)
            except (ApplicationError, PermissionDenied) as exc:
                self.message_user(request, f"Model #{model.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Model #{model.pk} {model.name!r} is "
                                           f"{'published' if publish else 'no longer published'}.", messages.SUCCESS)

    @admin.action(description="Publish selected models")
    def publish(self, request, queryset):
        self._toggle(request, list(queryset), publish=True)

    @admin.action(description="Unpublish selected models")
    def unpublish(self, request, queryset):
        self._toggle(request, list(queryset), publish=False)

    @admin.action(description="Compare selected models side by side")
    def compare(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return redirect(f"{reverse('admin:models_registry_trainedmodel_compare')}?ids={ids}")

    def compare_page(self, request):
        from training.admin_views import compare_view

        return compare_view(self.admin_site, request, kind="models", ids=parse_ids(request.GET.get("ids")))

    def lineage_page(self, request):
        """Every visible root model (no visible base) with the tree of models derived from it."""
        visible_models = models_visible_to(request.user)
        roots = visible_models.exclude(base_model__in=visible_models).order_by("created_at")
        trees = [(root, lineage_html(root, request.user)) for root in roots[:200]]
        context = {**self.admin_site.each_context(request), "title": "Model lineage", "trees": trees,
                   "opts": self.model._meta}
        return TemplateResponse(request, "admin/models_registry/lineage.html", context)
