"""The operator console for training runs: start, watch (live progress), cancel, retry, publish, compare."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Exists, OuterRef
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from access.rules import can, visible
from core.admin import AccessControlledAdmin, VisibleRelatedOnlyFilter, fields_of, parse_ids
from core.errors import ApplicationError
from engine.params import total_batch_size
from models_registry.models import Evaluation
from models_registry.selectors import models_visible_to
from models_registry.services import trained_model_publish

from .. import services
from ..console import RunActions, RunColumns
from ..models import TrainingRun
from . import pages


@admin.register(TrainingRun)
class TrainingRunAdmin(RunActions, RunColumns, AccessControlledAdmin, admin.ModelAdmin):
    change_list_template = "admin/training/trainingrun/change_list.html"
    list_display = (
        "id",
        "name",
        "kind",
        "status_badge",
        "progress",
        "best_map50",
        "dataset",
        "base_model_link",
        "created_by",
        "created_at",
        "duration",
    )
    list_display_links = ("id", "name")
    # Related filters list only what the visible runs refer to: the stock ones list every dataset and user.
    list_filter = (
        "kind",
        "status",
        "priority",
        "architecture",
        ("dataset", VisibleRelatedOnlyFilter),
        ("created_by", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("name", "dataset__name", "created_by__username")
    list_select_related = ("dataset", "base_model", "created_by", "trained_model")
    list_per_page = 50
    actions = ["cancel_runs", "retry_runs", "resume_runs", "publish_models", "compare_runs"]
    fieldsets = [
        (
            None,
            {
                "fields": (
                    "name",
                    "status_badge",
                    "progress",
                    "dataset",
                    "architecture",
                    "base_model_link",
                    "model_link",
                    "evaluated_model_link",
                    "results_link",
                    "retry_of_link",
                    "attempt",
                    "created_by",
                )
            },
        ),
        (
            "Timing",
            {"fields": ("created_at", "started_at", "finished_at", "heartbeat_at", "duration", "timings_table")},
        ),
        ("Curves", {"fields": ("curves",)}),
        (
            "Parameters",
            {
                "fields": (
                    "parameters_table",
                    "pipeline_steps",
                    "samples_html",
                    "weight_transfer_html",
                    "device",
                    "export_table",
                )
            },
        ),
        ("Resources", {"fields": ("priority", "resources", "hosts_table", "worker_link")}),
        ("Outcome", {"fields": ("stop_reason", "error_message", "log", "tracking_links")}),
        ("History", {"fields": ("history",)}),
    ]
    readonly_fields = fields_of(fieldsets)  # a run's page is a view: actions change its state

    class Media:
        js = ("admin_console/progress.js",)
        css = {"all": ("admin_console/console.css",)}

    def get_queryset(self, request):
        queryset = (
            super()
            .get_queryset(request)
            .annotate(
                base_model_visible=Exists(models_visible_to(request.user).filter(pk=OuterRef("base_model_id"))),
                retry_of_visible=Exists(
                    visible(request.user, "training.view_trainingrun", TrainingRun.objects.all()).filter(
                        pk=OuterRef("retry_of_id")
                    )
                ),
            )
        )
        url_name = getattr(request.resolver_match, "url_name", "") or ""
        return queryset.defer("log_tail") if url_name.endswith("changelist") else queryset

    @admin.display(description="processes and batch")
    def resources(self, obj):
        params = obj.parameters or {}
        processes = int(params.get("processes") or 1)
        nodes = int(params.get("nodes") or 1)
        device = params.get("device", "cpu")
        gpus = f" (GPUs {', '.join(obj.assigned_gpus)})" if obj.assigned_gpus else ""
        hosts = f" on each of {nodes} hosts" if nodes > 1 else ""
        batch = params.get("batch_size")
        if not batch:
            return f"{processes} × {device}{gpus}{hosts}"
        return (
            f"{processes} process{'es' if processes != 1 else ''} on {device}{gpus}{hosts}; batch {batch} per process "
            f"= {total_batch_size(params)} images per iteration"
        )

    @admin.display(description="hosts")
    def hosts_table(self, obj):
        parts = list(obj.nodes.exclude(node_rank__isnull=True).order_by("node_rank"))
        if not parts:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((p.node_rank, p.host, p.address, p.get_state_display(), p.message or "") for p in parts),
        )
        return format_html(
            "<table><tr><th>node</th><th>host</th><th>address</th><th>state</th><th>message</th></tr>{}</table>", rows
        )

    @admin.display(description="worker")
    def worker_link(self, obj):
        if not obj.worker_id:
            return obj.worker_process or "—"
        url = reverse("admin:workers_worker_change", args=[obj.worker_id])
        return format_html('<a href="{}">{}</a>', url, obj.worker.name)

    @admin.display(description="evaluated model")
    def evaluated_model_link(self, obj):
        if not obj.evaluated_model_id:
            return "—"
        url = reverse("admin:models_registry_trainedmodel_change", args=[obj.evaluated_model_id])
        return format_html('<a href="{}">model #{}</a>', url, obj.evaluated_model_id)

    @admin.display(description="results")
    def results_link(self, obj):
        """The per-class results the run stored (a training run's validation, an evaluation run's results), or a
        detection run's own page (the detection room's, named by URL only)."""
        if obj.kind == TrainingRun.Kind.DETECT:
            url = reverse("admin:detection_detectionrun_change", args=[obj.pk])
            return format_html('<a href="{}" id="run-results">The map of what it found, its figures</a>', url)
        evaluation = Evaluation.objects.filter(run=obj).order_by("-id").only("id").first()
        if evaluation is None:
            return "—"
        url = reverse("admin:models_registry_evaluation_change", args=[evaluation.pk])
        return format_html(
            '<a href="{}" id="run-results">Evaluation #{}: per class, curves, gallery</a>', url, evaluation.pk
        )

    @admin.display(description="experiment tracking")
    def tracking_links(self, obj):
        """The run's TensorBoard files (a zip from the API) and its MLflow run, where it has them."""
        parts = []
        if obj.kind == TrainingRun.Kind.TRAIN and obj.started_at:
            url = reverse("trainingrun-tensorboard", args=[obj.pk])
            parts.append(format_html('<a href="{}" id="tensorboard-files">TensorBoard files (zip)</a>', url))
        mlflow = obj.mlflow_tracking
        if mlflow.get("run_id"):
            parts.append(
                format_html("MLflow run <code>{}</code> (experiment {})", mlflow["run_id"], mlflow["experiment_id"])
            )
        return format_html_join(" · ", "{}", ((p,) for p in parts)) if parts else "—"

    def has_add_permission(self, request):
        return False  # runs start through the "Start training run" form, which calls the service

    def has_change_permission(self, request, obj=None):
        return False  # nothing of a run is edited by hand: its page is a view; actions change its state

    def has_delete_permission(self, request, obj=None):
        return False  # deletion goes through training_run_delete (API), which refuses unfinished runs

    def get_urls(self):
        return [
            path(
                "start/",
                self.admin_site.admin_view(lambda r: pages.start_run_view(self, r)),
                name="training_trainingrun_start",
            ),
            path(
                "evaluate/",
                self.admin_site.admin_view(lambda r: pages.evaluate_view(self, r)),
                name="training_trainingrun_evaluate",
            ),
            path(
                "onnx-export/",
                self.admin_site.admin_view(lambda r: pages.onnx_export_view(self, r)),
                name="training_trainingrun_onnx_export",
            ),
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
        kind = "models" if request.GET.get("kind") == "models" else "runs"
        return pages.compare_view(self.admin_site, request, kind=kind, ids=parse_ids(request.GET.get("ids")))

    @admin.action(description="Resume selected runs from their last checkpoint")
    def resume_runs(self, request, queryset):
        self._each(request, queryset, "resume", lambda run: services.training_run_resume(run=run, user=request.user))

    @admin.action(description="Publish the models of selected runs")
    def publish_models(self, request, queryset):

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
