"""The admin's "Detect on orthophotos" form. It only shapes input; ``detection_run_create`` decides."""

from __future__ import annotations

from django import forms
from django.conf import settings

from access.rules import visible
from core.admin import priority_field, spec_field
from datasets.models import Dataset
from datasets.selectors import orthophotos_visible_to

from ..params import DEFAULTS, SPECS

UNSET = {"tile_size": "the model's training size", "device": "the site's default"}  # defaults known at queueing


class MultipleFiles(forms.ClearableFileInput):
    allow_multiple_selected = True


class FilesField(forms.FileField):
    """Several files in one input (Django's documented pattern): a list of uploads, possibly empty."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFiles(attrs={"accept": ".tif,.tiff"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data]
        return [single(data, initial)] if data else []


class DetectForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Optional; defaults to the model and images.")
    orthophotos = forms.ModelMultipleChoiceField(
        queryset=None,
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 8}),
        help_text="Orthophotos already stored (of one dataset: one area), or upload new ones below.",
    )
    files = FilesField(
        required=False,
        label="Upload orthophotos",
        help_text="GeoTIFFs (8-bit grey, RGB or RGBA; any CRS), kept with the dataset below. Photos without "
        "georeferencing are accepted: their detections are in pixels.",
    )
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(), required=False, help_text="The dataset (the area) uploads are kept in."
    )
    known_sites = forms.FileField(
        required=False,
        help_text="GeoJSON of the area's known dump sites (polygons or boxes, any CRS): the run then reports site "
        f"recall, precision and false detections per km². At most {settings.DUMPSITE_GEOJSON_MAX_BYTES:,} bytes.",
    )
    classes = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The classes to keep (none ticked: all of the model's).",
    )
    priority = priority_field()

    def __init__(self, *args, user, model, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["orthophotos"].queryset = (
            orthophotos_visible_to(user).select_related("dataset").order_by("dataset__name", "name", "id")
        )
        self.fields["orthophotos"].label_from_instance = lambda o: (
            f"{o.dataset.name} / {o.name} ({o.width} x {o.height} px{'' if o.georeferenced else ', not georeferenced'})"
        )
        self.fields["dataset"].queryset = visible(user, "datasets.change_dataset", Dataset.objects.all())
        self.fields["classes"].choices = [(name, name) for name in model.class_names]
        for spec in SPECS.values():
            default = DEFAULTS.get(
                spec.name, "the model's training size" if spec.name == "tile_size" else "the site's default"
            )
            help_text = f"{spec.help} Valid: {spec.describe()}; default {default}."
            self.fields[spec.name] = spec_field(spec, default, help_text, blank_choice=True)

    def clean(self):
        data = super().clean()
        if not data.get("orthophotos") and not data.get("files"):
            raise forms.ValidationError("Choose stored orthophotos or upload files.")
        if data.get("files") and not data.get("dataset"):
            self.add_error("dataset", "Choose the dataset the uploaded orthophotos are kept in.")
        return data

    def parameters(self) -> dict:
        """The parameters that were given (the rest take their defaults), with the classes ticked."""
        data = self.cleaned_data
        params = {name: data[name] for name in SPECS if data.get(name) not in (None, "")}
        if data.get("classes"):
            params["classes"] = list(data["classes"])
        return params

    def add_service_errors(self, message: str, extra: dict) -> None:
        """Put a service's ApplicationError on the fields it names, the rest on the form."""
        placed = False
        for key, value in (extra or {}).items():
            field = {"known_sites_file": "known_sites", "file": "files"}.get(key, key)
            if field in self.fields:
                self.add_error(field, str(value) if key in SPECS or key == "classes" else f"{message} ({value})")
                placed = True
        if message and not placed:
            self.add_error(None, message)
