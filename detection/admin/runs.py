"""The console of detection runs: start one from a model's page, watch it, and see what it found on a map (the
orthophotos' footprints, the detections coloured by class with a score slider and a class filter, the crop of a
clicked detection), judged against the area's known sites."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join, json_script
from django.utils.http import urlencode

from access.rules import can, visible
from core.admin import AccessControlledAdmin, fields_of, parse_ids
from core.errors import ApplicationError
from datasets.models import Orthophoto
from models_registry.selectors import models_visible_to
from training.console import RunActions, RunColumns
from training.models import TrainingRun

from ..models import DetectionRun
from ..services import detection_run_create_with_uploads, known_sites_of
from .figures import by_review, curve_charts, false_detections_html, figures_table, missed_sites_html, sites_of
from .forms import DetectForm
from .maps import map_data
from .review import review_view
from .to_dataset import to_dataset_view


@admin.register(DetectionRun)
class DetectionRunAdmin(RunActions, RunColumns, AccessControlledAdmin, admin.ModelAdmin):
    view_perm = "training.view_trainingrun"  # a detection run is a run: the runs' permissions apply
    list_display = (
        "id",
        "name",
        "status_badge",
        "progress",
        "model_link",
        "dataset",
        "found",
        "created_by",
        "created_at",
    )
    list_display_links = ("id", "name")
    list_filter = ("status",)
    search_fields = ("name", "dataset__name", "evaluated_model__name")
    list_select_related = ("dataset", "evaluated_model", "created_by")
    list_per_page = 50
    actions = ["cancel_runs", "retry_runs"]
    fieldsets = [
        (None, {"fields": ("name", "status_badge", "progress", "model_link", "dataset", "orthophotos", "created_by")}),
        ("On the map", {"fields": ("detection_map", "found", "downloads")}),
        (
            "Against the known sites (or the review)",
            {"fields": ("site_figures", "site_curves", "missed_sites", "false_detections")},
        ),
        ("Parameters", {"fields": ("parameters_table", "device")}),
        ("Timing", {"fields": ("created_at", "started_at", "finished_at", "duration", "timings_table")}),
        ("Outcome", {"fields": ("stop_reason", "error_message", "log")}),
        ("History", {"fields": ("history",)}),
    ]
    readonly_fields = fields_of(fieldsets)

    class Media:
        css = {"all": ("vendor/leaflet-1.9.4/leaflet.css", "admin_console/console.css")}
        js = ("vendor/leaflet-1.9.4/leaflet.js", "admin_console/detection_map.js", "admin_console/progress.js")

    def visible_queryset(self, request, queryset):
        return visible(request.user, self.view_perm, queryset)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        url_name = getattr(request.resolver_match, "url_name", "") or ""
        return queryset.defer("log_tail") if url_name.endswith("changelist") else queryset

    def has_add_permission(self, request):
        return False  # started with "Detect on orthophotos" (a model's page), which calls the service

    def has_change_permission(self, request, obj=None):
        return False  # a run's page is a view: actions change its state

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not visible(request.user, "training.schedule_trainingrun", TrainingRun.objects.all()).exists():
            actions.pop("cancel_runs", None)
            actions.pop("retry_runs", None)
        return actions

    def get_urls(self):
        start = self.admin_site.admin_view(self.start_page)
        review = self.admin_site.admin_view(lambda request, pk: review_view(self, request, pk))
        return [
            path("start/", start, name="detection_detectionrun_start"),
            path("<int:pk>/review/", review, name="detection_detectionrun_review"),
            path(
                "<int:pk>/to-dataset/",
                self.admin_site.admin_view(lambda request, pk: to_dataset_view(self, request, pk)),
                name="detection_detectionrun_to_dataset",
            ),
        ] + super().get_urls()

    # --- columns and fields ---------------------------------------------------------------------------------
    @admin.display(description="model")
    def model_link(self, obj):  # not ``model``: a ModelAdmin's ``model`` is its model class
        if not obj.evaluated_model_id:
            return "—"
        url = reverse("admin:models_registry_trainedmodel_change", args=[obj.evaluated_model_id])
        return format_html('<a href="{}">#{} {}</a>', url, obj.evaluated_model_id, obj.evaluated_model.name)

    @admin.display(description="found")
    def found(self, obj):
        summary = obj.export_summary or {}
        if "detections" not in summary:
            return "—"
        text = f"{summary['detections']} detections ({summary.get('ignored', 0)} in ignore zones)"
        sites = sites_of(obj)
        if sites:
            text += f"; {sites['found']} of {sites['sites']} {'reviewed' if by_review(obj) else 'known'} sites"
        if summary.get("coordinates") == "pixel":
            text += "; in pixels (no georeferencing)"
        return text

    @admin.display(description="orthophotos")
    def orthophotos(self, obj):
        rows = Orthophoto.objects.filter(pk__in=obj.parameters.get("orthophotos") or []).order_by("id")
        return format_html_join(", ", "#{} {} ({} x {} px)", ((o.pk, o.name, o.width, o.height) for o in rows)) or "—"

    @admin.display(description="map")
    def detection_map(self, obj):
        data = map_data(obj)
        classes = format_html_join(
            "",
            '<label><input type="checkbox" class="class-filter" value="{}" checked> {}</label> ',
            ((name, name) for name in data["classes"]),
        )
        shown = (
            f"The {len(data['detections'])} best of {data['total']} detections are drawn."
            if data["total"] > len(data["detections"])
            else f"{data['total']} detections."
        )
        return format_html(
            '<div class="map-controls">score ≥ <input type="range" id="score-filter" min="{}" max="1" step="0.01" '
            'value="{}"> <output id="score-value">{}</output> {} <span id="map-count"></span></div>'
            '<div class="map-and-crop"><div id="detection-map"></div><div id="detection-detail"><p class="help">'
            'Click a detection to see its crop.</p></div></div>{}<p class="help">{} Yellow dashes: known sites '
            "(green when found); grey: in an ignore zone.</p>",
            data["threshold"],
            data["threshold"],
            data["threshold"],
            classes,
            json_script(data, "detection-map-data"),
            shown,
        )

    @admin.display(description="downloads")
    def downloads(self, obj):
        if obj.status != TrainingRun.Status.SUCCEEDED:
            return "—"
        listing = reverse("admin:detection_detection_changelist") + f"?{urlencode({'run__id__exact': obj.pk})}"
        base = reverse("detectionrun-download", args=[obj.pk])
        review = reverse("admin:detection_detectionrun_review", args=[obj.pk])
        to_dataset = reverse("admin:detection_detectionrun_to_dataset", args=[obj.pk])
        # the labelling tasks' form, by its URL name: detection imports nothing of labelling
        labelling = reverse("admin:labelling_labellingtask_new") + f"?{urlencode({'detection_run': obj.pk})}"
        return format_html(
            '<a href="{}" class="button" id="review-link">Review</a> '
            '<a href="{}" class="button" id="to-dataset-link">Add the reviewed detections to a dataset</a> '
            '<a href="{}" class="button" id="labelling-link">Pre-annotate tiles for CVAT / Label Studio</a> '
            '<a href="{}" id="detections-list">All detections with crops, best first</a> · download '
            '<a href="{}?as=gpkg">GeoPackage</a> · <a href="{}?as=geojson">GeoJSON</a> · <a href="{}?as=csv">CSV</a>',
            review,
            to_dataset,
            labelling,
            listing,
            base,
            base,
            base,
        )

    @admin.display(description="figures")
    def site_figures(self, obj):
        return figures_table(obj)

    @admin.display(description="curves")
    def site_curves(self, obj):
        sites = sites_of(obj)
        return curve_charts({f"Run #{obj.pk}": sites["curve"]}) if sites else "—"

    @admin.display(description="missed sites")
    def missed_sites(self, obj):
        return missed_sites_html(obj)

    @admin.display(description="false detections")
    def false_detections(self, obj):
        return false_detections_html(obj)

    # --- start --------------------------------------------------------------------------------------------
    def start_page(self, request):
        """Detect with a model on stored or uploaded orthophotos: checked and queued by ``detection_run_create``."""
        if not can(request.user, "detection.run_detection"):
            raise PermissionDenied
        chosen = parse_ids(request.GET.get("model"), limit=1)
        model = models_visible_to(request.user).filter(pk__in=chosen).first()
        if model is None:
            raise Http404("No such model.")
        posted = request.method == "POST"  # an empty POST is still a submission (``request.POST or None`` is not)
        form = DetectForm(
            request.POST if posted else None, request.FILES if posted else None, user=request.user, model=model
        )
        if posted and form.is_valid():
            data = form.cleaned_data
            try:
                run = detection_run_create_with_uploads(
                    model=model,
                    orthophotos=list(data["orthophotos"] or []),
                    uploads=data["files"],
                    dataset=data["dataset"],
                    parameters=form.parameters(),
                    known_sites=known_sites_of({"known_sites_file": data.get("known_sites")}),
                    name=data["name"],
                    created_by=request.user,
                    priority=data["priority"] or "normal",
                )
            except (ApplicationError, PermissionDenied) as exc:
                form.add_service_errors(getattr(exc, "message", str(exc)), getattr(exc, "extra", {}))
            else:
                messages.success(request, f"Detection run #{run.pk} {run.name!r} is queued.")
                return redirect("admin:detection_detectionrun_change", run.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Detect with model #{model.pk} {model.name}",
            "crumb": "Detect",
            "changelist_url": reverse("admin:detection_detectionrun_changelist"),
            "changelist_title": "Detection runs",
            "form_id": "detect-form",
            "submit_label": "Detect",
            "intro": "The model runs over every window of the orthophotos in a worker; the sites it finds are "
            "stored with the run and drawn on its map.",
            "form": form,
            "opts": self.model._meta,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/training/start_run.html", context)
