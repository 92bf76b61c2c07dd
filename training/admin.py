"""The operator console for training runs: start, watch (live progress), cancel, retry, publish, compare."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from audit.admin import audit_trail_html
from dumpsite.access import can, visible
from models_registry.admin import HIDDEN, epoch_map_chart, related_model_html
from models_registry.selectors import models_visible_to
from dumpsite.admin_access import AccessControlledAdmin, VisibleRelatedOnlyFilter, parse_ids
from dumpsite.charts import Series, line_chart
from dumpsite.errors import ApplicationError
from dumpsite.formatting import duration as format_duration

from . import admin_views, services
from .models import TrainingRun
from .selectors import run_log_tail, run_metrics

BADGE_COLOURS = {"queued": "#8a8a8a", "running": "#2f6fb0", "succeeded": "#3b9c5a", "failed": "#b03a48",
                 "cancelled": "#b07a2f"}


def progress_html(run: TrainingRun):
    eta = f"ETA {format_duration(run.eta_seconds)}" if run.status == "running" and run.eta_seconds is not None else ""
    return format_html(
        '<span class="run-progress" data-run="{}" data-status="{}"><progress max="100" value="{}"></progress> '
        '<span class="pct">{}%</span> <span class="eta">{}</span></span>',
        run.pk, run.status, run.progress_percent, round(run.progress_percent), eta)


@admin.register(TrainingRun)
class TrainingRunAdmin(AccessControlledAdmin, admin.ModelAdmin):
    change_list_template = "admin/training/trainingrun/change_list.html"
    list_display = ("id", "name", "status_badge", "progress", "best_map50", "dataset", "base_model_link",
                    "created_by", "created_at", "duration")
    list_display_links = ("id", "name")
    # Related filters list only what the visible runs refer to: the stock ones list every dataset and user.
    list_filter = ("status", "architecture", ("dataset", VisibleRelatedOnlyFilter),
                   ("created_by", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "dataset__name", "created_by__username")
    list_select_related = ("dataset", "base_model", "created_by", "trained_model")
    list_per_page = 50
    actions = ["cancel_runs", "retry_runs", "resume_runs", "publish_models", "compare_runs"]
    fieldsets = [
        (None, {"fields": ("name", "status_badge", "progress", "dataset", "architecture", "base_model_link",
                           "model_link", "retry_of_link", "attempt", "created_by")}),
        ("Timing", {"fields": ("created_at", "started_at", "finished_at", "heartbeat_at", "duration",
                               "timings_table")}),
        ("Curves", {"fields": ("loss_chart", "lr_chart", "map_chart")}),
        ("Parameters", {"fields": ("parameters_table", "export_table")}),
        ("Outcome", {"fields": ("error_message", "log")}),
        ("History", {"fields": ("history",)}),
    ]
    readonly_fields = ("name", "status_badge", "progress", "dataset", "architecture", "base_model_link",
                       "model_link", "retry_of_link", "attempt", "created_by", "created_at", "started_at", "finished_at", "heartbeat_at",
                       "duration", "timings_table", "loss_chart", "lr_chart", "map_chart", "parameters_table",
                       "export_table", "error_message", "log", "history")

    class Media:
        js = ("admin_console/progress.js",)
        css = {"all": ("admin_console/console.css",)}

    def get_queryset(self, request):
        queryset = super().get_queryset(request).annotate(
            base_model_visible=Exists(models_visible_to(request.user).filter(pk=OuterRef("base_model_id"))),
            retry_of_visible=Exists(visible(request.user, "training.view_trainingrun", TrainingRun.objects.all())
                                    .filter(pk=OuterRef("retry_of_id"))))
        url_name = getattr(request.resolver_match, "url_name", "") or ""
        return queryset.defer("log_tail") if url_name.endswith("changelist") else queryset

    def has_add_permission(self, request):
        return False  # runs start through the "Start training run" form, which calls the service

    def has_change_permission(self, request, obj=None):
        return False  # nothing of a run is edited by hand: its page is a view; actions change its state

    def has_delete_permission(self, request, obj=None):
        return False  # deletion goes through training_run_delete (API), which refuses unfinished runs

    def get_urls(self):
        return [
            path("start/", self.admin_site.admin_view(lambda r: admin_views.start_run_view(self, r)),
                 name="training_trainingrun_start"),
            path("compare/", self.admin_site.admin_view(self.compare_page), name="training_trainingrun_compare"),
        ] + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        extra = {"can_start": can(request.user, "training.add_trainingrun"), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def get_actions(self, request):
        actions = super().get_actions(request)
        user = request.user
        # Any run this user may schedule (globally, or per object through the user or a group)?
        if not visible(user, "training.schedule_trainingrun", TrainingRun.objects.all()).exists():
            actions.pop("cancel_runs", None)
            actions.pop("retry_runs", None)
            actions.pop("resume_runs", None)
        if not can(user, "models_registry.publish_trainedmodel"):
            actions.pop("publish_models", None)
        return actions

    def compare_page(self, request):
        return admin_views.compare_view(self.admin_site, request, kind="runs", ids=parse_ids(request.GET.get("ids")))

    # --- columns -------------------------------------------------------------------------------------------
    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return format_html('<span class="badge" style="background:{}">{}</span>',
                           BADGE_COLOURS.get(obj.status, "#777"), obj.get_status_display())

    @admin.display(description="progress", ordering="progress_percent")
    def progress(self, obj):
        return progress_html(obj)

    @admin.display(description="best mAP50")
    def best_map50(self, obj):
        model = getattr(obj, "trained_model", None)
        if model is None or model.bbox_mAP_50 is None:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("admin:models_registry_trainedmodel_change",
                                                          args=[model.pk]), f"{model.bbox_mAP_50:.3f}")

    @admin.display(description="base model")
    def base_model_link(self, obj):
        return related_model_html(obj.base_model_id, getattr(obj.base_model, "name", ""),
                                  getattr(obj, "base_model_visible", False))

    @admin.display(description="retry of")
    def retry_of_link(self, obj):
        if obj.retry_of_id is None:
            return "—"
        if not getattr(obj, "retry_of_visible", False):
            return HIDDEN
        return format_html('<a href="{}">#{}</a>', reverse("admin:training_trainingrun_change",
                                                          args=[obj.retry_of_id]), obj.retry_of_id)

    @admin.display(description="duration")
    def duration(self, obj):
        return format_duration(obj.duration_seconds)

    @admin.display(description="trained model")
    def model_link(self, obj):
        model = getattr(obj, "trained_model", None)
        if model is None:
            return "—"
        return format_html('<a href="{}">#{} {}</a>', reverse("admin:models_registry_trainedmodel_change",
                                                             args=[model.pk]), model.pk, model.name)

    # --- detail ---------------------------------------------------------------------------------------------
    def _curves(self, obj):
        if not hasattr(obj, "_curves_cache"):
            obj._curves_cache = run_metrics(obj)
        return obj._curves_cache

    def _iteration_chart(self, obj, key: str, title: str):
        its = self._curves(obj)["iterations"]
        return mark_safe(line_chart([Series(key, [(i["iteration"], i[key]) for i in its])],
                                    title=title, x_label="iteration", y_label=key, y_min=0))

    @admin.display(description="loss per iteration")
    def loss_chart(self, obj):
        return self._iteration_chart(obj, "loss", "Training loss")

    @admin.display(description="learning rate")
    def lr_chart(self, obj):
        return self._iteration_chart(obj, "lr", "Learning rate")

    @admin.display(description="mAP per epoch")
    def map_chart(self, obj):
        return epoch_map_chart(self._curves(obj)["epochs"])

    @admin.display(description="hyper-parameters")
    def parameters_table(self, obj):
        return format_html('<table class="kv">{}</table>', format_html_join(
            "", "<tr><th>{}</th><td>{}</td></tr>", sorted(obj.parameters.items())))

    @admin.display(description="exported split")
    def export_table(self, obj):
        keys = ("train_images", "val_images", "train_annotations", "val_annotations", "classes")
        return format_html('<table class="kv">{}</table>', format_html_join(
            "", "<tr><th>{}</th><td>{}</td></tr>", [(k, obj.export_summary.get(k)) for k in keys
                                                    if k in obj.export_summary])) if obj.export_summary else "—"

    @admin.display(description="where the time went")
    def timings_table(self, obj):
        if not obj.timings:
            return "—"
        total = sum(obj.timings.values()) or 1.0
        phases = [(phase, obj.timings[phase]) for phase in TrainingRun.PHASES if phase in obj.timings]
        return format_html('<table class="kv" id="run-timings">{}</table>', format_html_join(
            "", "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            [(phase, f"{seconds:.2f} s", f"{100 * seconds / total:.1f}%") for phase, seconds in phases]))

    @admin.display(description="log (end)")
    def log(self, obj):
        return format_html('<pre class="log">{}</pre>', run_log_tail(obj)[-8000:] or "—")

    @admin.display(description="audit trail")
    def history(self, obj):
        return audit_trail_html(obj)

    # --- actions --------------------------------------------------------------------------------------------
    def _each(self, request, queryset, label, func):
        """Apply a service to each selected run; the service checks the user's permission on each one."""
        done = 0
        for run in queryset:
            try:
                func(run)
                done += 1
            except (ApplicationError, PermissionDenied) as exc:
                self.message_user(request, f"Run #{run.pk}: {exc}", messages.ERROR)
        if done:
            self.message_user(request, f"{label.capitalize()}: {done} run(s).", messages.SUCCESS)

    @admin.action(description="Cancel selected runs")
    def cancel_runs(self, request, queryset):
        self._each(request, queryset, "cancel",
                   lambda run: services.training_run_cancel(run=run, user=request.user))

    @admin.action(description="Retry selected runs")
    def retry_runs(self, request, queryset):
        self._each(request, queryset, "retry",
                   lambda run: services.training_run_retry(run=run, user=request.user))

    @admin.action(description="Resume selected runs from their last checkpoint")
    def resume_runs(self, request, queryset):
        self._each(request, queryset, "resume",
                   lambda run: services.training_run_resume(run=run, user=request.user))

    @admin.action(description="Publish the models of selected runs")
    def publish_models(self, request, queryset):
        from models_registry.services import trained_model_publish

        def publish(run):
            model = getattr(run, "trained_model", None)
            if model is None:
                raise ApplicationError("it has no trained model.")
            trained_model_publish(model=model, user=request.user)

        self._each(request, queryset, "publish the model of", publish)

    @admin.action(description="Compare selected runs side by side")
    def compare_runs(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return redirect(f"{reverse('admin:training_trainingrun_compare')}?ids={ids}")
