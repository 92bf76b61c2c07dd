"""The console's "Add the reviewed detections to a dataset": a form for the target and the tiles; the service
queues the dataset import, whose page shows its progress."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse

from access.rules import visible
from core.errors import ApplicationError
from datasets.models import Dataset

from ..selectors import detection_runs_visible_to
from ..to_dataset import reviewed_sites_to_dataset


class ToDatasetForm(forms.Form):
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(), required=False, help_text="An existing dataset (classes matched by name)."
    )
    dataset_name = forms.CharField(max_length=200, required=False, label="or a new dataset")
    tile_size = forms.IntegerField(required=False, help_text="Pixels; default: the run's window size.")
    overlap = forms.IntegerField(required=False, help_text="Pixels; default: a quarter of the tile.")
    hard_negatives = forms.BooleanField(
        required=False, initial=True, help_text="Rejected detections become background tiles (hard negatives)."
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = visible(user, "datasets.change_dataset", Dataset.objects.all())

    def clean(self):
        data = super().clean()
        if bool(data.get("dataset")) == bool(data.get("dataset_name")):
            raise forms.ValidationError("Choose an existing dataset or name a new one.")
        return data


def to_dataset_view(model_admin, request, pk: int):
    run = detection_runs_visible_to(request.user).filter(pk=pk).first()
    if run is None:
        raise Http404("No such detection run.")
    posted = request.method == "POST"
    form = ToDatasetForm(request.POST if posted else None, user=request.user)
    if posted and form.is_valid():
        data = form.cleaned_data
        try:
            job = reviewed_sites_to_dataset(
                run=run,
                user=request.user,
                dataset=data["dataset"],
                dataset_name=data["dataset_name"] or None,
                tile_size=data["tile_size"],
                overlap=data["overlap"],
                hard_negatives=data["hard_negatives"],
            )
        except (ApplicationError, PermissionDenied) as exc:
            form.add_error(None, getattr(exc, "message", str(exc)) or "Permission denied.")
        else:
            messages.success(request, f"Dataset import #{job.pk} of the reviewed sites is queued for a worker.")
            return redirect(reverse("admin:datasets_datasetimport_change", args=[job.pk]))
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Add the reviewed detections of run #{run.pk} to a dataset",
        "crumb": "To a dataset",
        "changelist_url": reverse("admin:detection_detectionrun_change", args=[run.pk]),
        "changelist_title": f"Detection run #{run.pk}",
        "form_id": "to-dataset-form",
        "submit_label": "Add to the dataset",
        "intro": "Confirmed detections (corrected ones and sites drawn by reviewers too) become boxes of tiles cut "
        "from the run's orthophotos, rejected ones hard-negative tiles; each image and box records where it came "
        "from. A worker cuts the tiles; the import's page shows its progress.",
        "form": form,
        "opts": model_admin.model._meta,
        "has_view_permission": True,
    }
    return TemplateResponse(request, "admin/training/start_run.html", context)
