"""Labelling tasks in the console: the list with live progress and each task's acceptance rate; a task's page with
its archives, the rule it was made with, and the report of what came back; the form that makes one (from a
detection run's page, or for a dataset) and the one that reports on what came back."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from access.rules import can, visible
from core.admin import ReadOnlyAdmin, fields_of, progress_bar
from core.errors import ApplicationError
from core.storage import stored_file_response
from datasets.models import Dataset
from datasets.selectors import datasets_visible_to
from detection.selectors import detection_runs_visible_to
from models_registry.models import TrainedModel
from models_registry.selectors import models_visible_to
from training.models import TrainingRun

from .acceptance import COUNTS, labelling_task_acceptance
from .building import task_archive
from .formats import FORMATS, archive_name
from .models import LabellingTask
from .selection import RULES
from .selectors import labelling_tasks_visible_to
from .services import labelling_task_create

FORMAT_NAMES = {
    "cvat_coco": "CVAT task (COCO 1.0)",
    "cvat_xml": "CVAT task (CVAT for images 1.1)",
    "label_studio": "Label Studio tasks",
}


def progress_html(task: LabellingTask):
    url = reverse("labellingtask-detail", args=[task.pk])
    bar = progress_bar(status=task.status, percent=task.percent, eta_seconds=task.eta_seconds(timezone.now()), url=url)
    return format_html("{} {}", bar, task.stage)


class LabellingTaskForm(forms.Form):
    detection_run = forms.ModelChoiceField(
        queryset=TrainingRun.objects.none(), required=False, help_text="A finished detection run: its tiles."
    )
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(), required=False, label="or a dataset", help_text="Run through the model."
    )
    model = forms.ModelChoiceField(
        queryset=TrainedModel.objects.none(), required=False, help_text="For a dataset (a run's model is its own)."
    )
    rule = forms.ChoiceField(choices=[(r, r.replace("_", " ")) for r in RULES], initial="all")
    count = forms.IntegerField(initial=100, min_value=1, help_text="How many tiles at most.")
    band_low = forms.FloatField(initial=0.3, help_text="Uncertain scores from ...")
    band_high = forms.FloatField(initial=0.7, help_text="... to (the uncertain rule).")
    second_model = forms.ModelChoiceField(
        queryset=TrainedModel.objects.none(), required=False, help_text="The other model (the disagreement rule)."
    )
    weak_classes = forms.IntegerField(initial=1, help_text="How many of the lowest-AP classes (weak classes).")
    min_distance_m = forms.FloatField(initial=0, help_text="Metres between the centres of two chosen tiles.")
    score_threshold = forms.FloatField(initial=0.3, help_text="The lowest score exported as a box.")
    tile_size = forms.IntegerField(required=False, help_text="Pixels (a detection run's tiles; default: its windows).")
    image_url = forms.CharField(initial="/data/local-files/?d=images/", help_text="Label Studio's prefix of files.")
    to_label = forms.ModelChoiceField(
        queryset=Dataset.objects.none(), required=False, help_text="Also add the pictures here, marked to label."
    )
    name = forms.CharField(max_length=200, required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["detection_run"].queryset = detection_runs_visible_to(user).filter(status="succeeded")
        self.fields["dataset"].queryset = datasets_visible_to(user)
        models = models_visible_to(user).order_by("-id")
        self.fields["model"].queryset = models
        self.fields["second_model"].queryset = models
        self.fields["to_label"].queryset = visible(user, "datasets.change_dataset", Dataset.objects.all())

    def parameters(self) -> dict:
        data = self.cleaned_data
        keys = ("rule", "count", "weak_classes", "min_distance_m", "score_threshold", "tile_size", "image_url")
        values = {k: data[k] for k in keys if data.get(k) not in (None, "")}
        values["band"] = [data["band_low"], data["band_high"]]
        return values


class AcceptanceForm(forms.Form):
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(), help_text="The dataset the tool's export was imported into."
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = datasets_visible_to(user)


@admin.register(LabellingTask)
class LabellingTaskAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Read-only pages: a task is made by its form (the service decides) and built by a worker."""

    list_display = ("id", "name", "status", "progress", "model_version", "source", "image_count", "accepted")
    list_filter = ("status",)
    fieldsets = [
        ("Task", {"fields": ("name", "model_version", "source", "rule", "created_by", "created_at")}),
        ("Progress", {"fields": ("status", "progress", "error", "started_at", "finished_at")}),
        ("Archives", {"fields": ("downloads", "image_count", "numbers")}),
        ("What came back", {"fields": ("acceptance_table",)}),
    ]
    readonly_fields = fields_of(fieldsets)

    class Media:
        js = ("admin_console/progress.js",)
        css = {"all": ("admin_console/console.css",)}

    def get_queryset(self, request):
        return labelling_tasks_visible_to(request.user).defer("images")

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        if obj is None:
            return request.user.is_active and request.user.is_staff
        return labelling_tasks_visible_to(request.user).filter(pk=obj.pk).exists()

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("new/", view(self.create_view), name="labelling_labellingtask_new"),
            path("<int:pk>/download/<str:fmt>/", view(self.download_view), name="labelling_labellingtask_download"),
            path("<int:pk>/acceptance/", view(self.acceptance_view), name="labelling_labellingtask_acceptance"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra = {"can_make": can(request.user, "labelling.add_labellingtask")}
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    @admin.display(description="progress")
    def progress(self, obj):
        return progress_html(obj)

    @admin.display(description="source")
    def source(self, obj):
        if obj.detection_run_id:
            url = reverse("admin:detection_detectionrun_change", args=[obj.detection_run_id])
            return format_html('<a href="{}">detection run #{}</a>', url, obj.detection_run_id)
        return format_html("dataset {!r} run through the model", obj.dataset.name if obj.dataset else "?")

    @admin.display(description="rule")
    def rule(self, obj):
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in obj.parameters.items())

    @admin.display(description="images")
    def image_count(self, obj):
        return obj.stats.get("chosen", "—")

    @admin.display(description="numbers")
    def numbers(self, obj):
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in obj.stats.items()) or "—"

    @admin.display(description="accepted")
    def accepted(self, obj):
        rate = (obj.acceptance or {}).get("acceptance_rate")
        return "—" if rate is None else f"{100 * rate:.1f} %"

    @admin.display(description="downloads")
    def downloads(self, obj):
        if obj.status != LabellingTask.Status.SUCCEEDED:
            return "—"
        links = [
            (reverse("admin:labelling_labellingtask_download", args=[obj.pk, fmt]), FORMAT_NAMES[fmt])
            for fmt in FORMATS
        ]
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    @admin.display(description="acceptance")
    def acceptance_table(self, obj):
        report = obj.acceptance or {}
        ask = reverse("admin:labelling_labellingtask_acceptance", args=[obj.pk])
        if not report:
            return format_html('Nothing reported yet. <a href="{}">Report what came back</a>', ask)
        cells = format_html_join("", "<td>{}</td>", ((report.get(k, 0),) for k in COUNTS))
        return format_html(
            "<table><tr><th>exported</th><th>unchanged</th><th>corrected</th><th>removed</th><th>added</th>"
            "<th>acceptance rate</th></tr><tr>{}<td>{}</td></tr></table>"
            '{} images came back, {} did not. <a href="{}">Report again</a>',
            cells,
            self.accepted(obj),
            report.get("images", 0),
            report.get("images_missing", 0),
            ask,
        )

    def _task(self, request, pk: int) -> LabellingTask:
        task = labelling_tasks_visible_to(request.user).filter(pk=pk).first()
        if task is None:
            raise Http404("No such labelling task.")
        return task

    def download_view(self, request, pk: int, fmt: str):
        task = self._task(request, pk)
        if fmt not in FORMATS or task.status != LabellingTask.Status.SUCCEEDED:
            raise Http404("No such archive.")
        try:
            return stored_file_response(
                task_archive(task.pk, fmt),
                filename=f"labelling-task-{task.pk}-{archive_name(fmt)}",
                content_type="application/zip",
            )
        except FileNotFoundError:
            raise Http404("The archive is no longer stored.") from None

    def _page(self, request, *, title: str, form, intro: str, submit: str, back: str, back_title: str):
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "crumb": title,
            "changelist_url": back,
            "changelist_title": back_title,
            "form_id": "labelling-form",
            "submit_label": submit,
            "intro": intro,
            "form": form,
            "opts": self.model._meta,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/training/start_run.html", context)

    def acceptance_view(self, request, pk: int):
        task = self._task(request, pk)
        posted = request.method == "POST"
        form = AcceptanceForm(request.POST if posted else None, user=request.user)
        if posted and form.is_valid():
            try:
                report = labelling_task_acceptance(task=task, dataset=form.cleaned_data["dataset"], user=request.user)
            except (ApplicationError, PermissionDenied) as exc:
                form.add_error(None, getattr(exc, "message", str(exc)) or "Permission denied.")
            else:
                rate = report["acceptance_rate"]
                shown = "—" if rate is None else f"{100 * rate:.1f} %"
                messages.success(request, f"Acceptance rate of task #{task.pk}: {shown}.")
                return redirect(reverse("admin:labelling_labellingtask_change", args=[task.pk]))
        return self._page(
            request,
            title=f"What came back from labelling task #{task.pk}",
            form=form,
            intro="Import the tool's export into a dataset first (Datasets → Import a COCO zip). Its images are "
            "matched to the task's by file name, and each box the model proposed is counted as unchanged (IoU ≥ "
            "0.95, same class), corrected, or removed; boxes a person drew are counted as added.",
            submit="Compare",
            back=reverse("admin:labelling_labellingtask_change", args=[task.pk]),
            back_title=f"Labelling task #{task.pk}",
        )

    def create_view(self, request):
        if not can(request.user, "labelling.add_labellingtask"):
            raise PermissionDenied
        posted = request.method == "POST"
        initial = {k: request.GET[k] for k in ("detection_run", "dataset") if request.GET.get(k, "").isdigit()}
        form = LabellingTaskForm(request.POST if posted else None, initial=initial, user=request.user)
        if posted and form.is_valid():
            data = form.cleaned_data
            try:
                task = labelling_task_create(
                    user=request.user,
                    name=data["name"],
                    detection_run=data["detection_run"],
                    dataset=data["dataset"],
                    model=data["model"],
                    second_model=data["second_model"],
                    parameters=form.parameters(),
                    to_label=data["to_label"],
                )
            except (ApplicationError, PermissionDenied) as exc:
                form.add_error(None, getattr(exc, "message", str(exc)) or "Permission denied.")
            else:
                messages.success(request, f"Labelling task #{task.pk} is queued for a worker.")
                return redirect(reverse("admin:labelling_labellingtask_change", args=[task.pk]))
        return self._page(
            request,
            title="Pre-annotate tiles for CVAT and Label Studio",
            form=form,
            intro="The model's boxes become pre-annotations for CVAT (COCO 1.0, CVAT for images 1.1) and Label "
            "Studio. The rule chooses the tiles where labelling pays most. A detection run's model is its own; a "
            "dataset is run through the model you choose. A worker builds the task; its page shows its progress.",
            submit="Make the labelling task",
            back=reverse("admin:labelling_labellingtask_changelist"),
            back_title="Labelling tasks",
        )
