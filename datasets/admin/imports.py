"""The operator console for COCO zip uploads: the upload page (linked from the datasets list) and the imports,
each with its live progress (percent, ETA) and its report of every rejected item."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from access.rules import visible
from core.admin import ReadOnlyAdmin, fields_of, progress_bar, related_link
from core.errors import ApplicationError

from ..imports import dataset_import_create, may_import, orthophoto_tiling_create
from ..models import Dataset, DatasetImport
from ..selectors import datasets_visible_to, imports_visible_to

REPORT_ROWS = 500  # rejected items shown on the page (the API gives them all)


def show_refusal(form, exc, fields: tuple[str, ...]) -> None:
    """A service's refusal on the upload form: on the field it names (a dataset name clash on the name), else on
    the form."""
    extra = getattr(exc, "extra", {})
    field = "dataset_name" if "name" in extra else next((f for f in fields if f in extra), None)
    form.add_error(field, getattr(exc, "message", str(exc)) or "You may not do that.")


class ImportZipForm(forms.Form):
    archive = forms.FileField(
        help_text="A COCO zip as CVAT (COCO 1.0), Label Studio (COCO) or any tool exports it: a COCO JSON file and "
        "the images. Checked before it is accepted; a worker imports it."
    )
    dataset_name = forms.CharField(required=False, max_length=200, label="New dataset", help_text="Its name.")
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(), required=False, label="Or into dataset", help_text="Classes matched by name."
    )
    add_classes = forms.BooleanField(
        required=False, label="Add missing classes", help_text="Into an existing dataset: add the classes it lacks."
    )
    coco_file = forms.CharField(
        required=False, max_length=500, label="COCO file", help_text="Only when the archive holds several JSON files."
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = visible(user, "datasets.change_dataset", Dataset.objects.all())


def import_page(model_admin, request):
    """Upload a COCO zip into a new or existing dataset: the same service as the API's upload."""
    if not may_import(request.user):
        raise PermissionDenied
    form = ImportZipForm(request.POST or None, request.FILES or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = dataset_import_create(
                upload=data["archive"],
                archive_name=data["archive"].name,
                dataset=data["dataset"],
                dataset_name=data["dataset_name"] or None,
                add_classes=data["add_classes"],
                coco_file=data["coco_file"] or None,
                user=request.user,
            )
        except (ApplicationError, PermissionDenied) as exc:
            show_refusal(form, exc, ("archive", "dataset_name", "coco_file"))
        else:
            messages.success(request, f"Import #{job.pk} of {job.archive_name!r} is queued for a worker.")
            return redirect("admin:datasets_datasetimport_change", job.pk)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Import a COCO zip",
        "form": form,
        "opts": Dataset._meta,
        "submit_label": "Upload and import",
        "intro": "Every member of the archive is checked first (paths, links, nested archives, sizes, compression "
        "ratio); a worker then imports it and reports every item it rejected, with the reason.",
    }
    return TemplateResponse(request, "admin/upload_form.html", context)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, (list, tuple)) else [data]
        return [super(MultipleFileField, self).clean(f, initial) for f in files if f] or super().clean(None, initial)


class TileOrthophotoForm(forms.Form):
    orthophoto = MultipleFileField(
        help_text="One or more GeoTIFF orthophotos with a coordinate reference system (8-bit grey, RGB or RGBA)."
    )
    annotations = forms.FileField(
        help_text="The dump sites as a GeoJSON FeatureCollection of polygons (drawn in QGIS or similar), in any EPSG "
        "CRS named in its 'crs' member (else WGS 84)."
    )
    dataset_name = forms.CharField(required=False, max_length=200, label="New dataset", help_text="Its name.")
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(), required=False, label="Or into dataset", help_text="Classes matched by name."
    )
    add_classes = forms.BooleanField(required=False, label="Add missing classes")
    tile_size = forms.IntegerField(initial=1024, min_value=64, max_value=4096, help_text="Pixels.")
    overlap = forms.IntegerField(initial=128, min_value=0, help_text="Pixels shared by neighbouring tiles.")
    min_box_share = forms.FloatField(
        initial=0.3, min_value=0.01, max_value=1, help_text="A site cut by a tile edge keeps its box from this share."
    )
    background_ratio = forms.FloatField(
        initial=0.1, min_value=0, max_value=1, help_text="Share of the tiles without any site that are kept."
    )
    class_property = forms.CharField(initial="class", help_text="The feature property naming the class.")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = visible(user, "datasets.change_dataset", Dataset.objects.all())


TILING_OPTIONS = ("tile_size", "overlap", "min_box_share", "background_ratio", "class_property")


def tile_page(model_admin, request):
    """Orthophotos and their sites cut into tiles: the same service as the API's."""
    if not may_import(request.user):
        raise PermissionDenied
    form = TileOrthophotoForm(request.POST or None, request.FILES or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = orthophoto_tiling_create(
                orthophotos=data["orthophoto"],
                annotations=data["annotations"],
                options={k: data[k] for k in TILING_OPTIONS},
                dataset=data["dataset"],
                dataset_name=data["dataset_name"] or None,
                add_classes=data["add_classes"],
                user=request.user,
            )
        except (ApplicationError, PermissionDenied) as exc:
            show_refusal(form, exc, ("orthophoto", "annotations"))
        else:
            messages.success(request, f"Tiling #{job.pk} of {job.archive_name!r} is queued for a worker.")
            return redirect("admin:datasets_datasetimport_change", job.pk)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Tile an orthophoto",
        "form": form,
        "opts": Dataset._meta,
        "submit_label": "Upload and tile",
        "intro": "Each orthophoto is read window by window (never whole); every site is clipped to each tile and kept "
        "as a box where enough of it lies inside; each tile keeps its footprint for the map and the spatial split.",
    }
    return TemplateResponse(request, "admin/upload_form.html", context)


def import_progress_html(job: DatasetImport):
    url = reverse("datasetimport-detail", args=[job.pk])
    return progress_bar(status=job.status, percent=job.percent, eta_seconds=job.eta_seconds(timezone.now()), url=url)


@admin.register(DatasetImport)
class DatasetImportAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Read-only: an import is made by uploading, and changed only by its worker."""

    list_display = (
        "id",
        "kind",
        "archive_name",
        "target",
        "status",
        "progress",
        "images_imported",
        "rejected_count",
        "created_by",
        "created_at",
    )
    list_filter = ("kind", "status")
    list_select_related = ("dataset", "created_by")
    fieldsets = [
        ("Upload", {"fields": ("kind", "archive_name", "archive_bytes", "archive_members", "layout", "coco_file")}),
        ("Into", {"fields": ("target", "add_classes", "classes_added")}),
        ("Progress", {"fields": ("status", "progress", "items", "worker_process", "started_at", "finished_at")}),
        ("Report", {"fields": ("images_imported", "annotations_imported", "tiling", "rejected_count", "report")}),
        ("Georeferencing", {"fields": ("georeferenced_count", "georeference_report")}),
        ("Outcome", {"fields": ("error_message", "created_by", "created_at")}),
    ]
    readonly_fields = fields_of(fieldsets)

    class Media:
        js = ("admin_console/progress.js",)
        css = {"all": ("admin_console/console.css",)}

    def get_queryset(self, request):
        seen = datasets_visible_to(request.user)
        return imports_visible_to(request.user, super().get_queryset(request)).annotate(
            dataset_visible=Exists(seen.filter(pk=OuterRef("dataset_id")))
        )

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        if obj is None:
            return request.user.is_active and request.user.is_staff
        return imports_visible_to(request.user).filter(pk=obj.pk).exists()

    @admin.display(description="into")
    def target(self, obj):
        if obj.dataset_id:
            return related_link(
                obj.dataset_id, obj.dataset_visible, url_name="admin:datasets_dataset_change", name=obj.dataset.name
            )
        return f"new dataset {obj.new_dataset_name!r}"

    @admin.display(description="progress")
    def progress(self, obj):
        return import_progress_html(obj)

    @admin.display(description="items")
    def items(self, obj):
        unit = "windows" if obj.kind == DatasetImport.Kind.ORTHOPHOTO else "images"
        return f"{obj.items_done:,} of {obj.items_total:,} {unit}"

    @admin.display(description="tiling")
    def tiling(self, obj):
        if obj.kind != DatasetImport.Kind.ORTHOPHOTO:
            return "—"
        options = obj.parameters.get("options", {})
        stats = obj.stats or {}
        settings_line = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in options.items())
        if not stats:
            return settings_line
        return format_html(
            "{}<br>{} windows: {} tiles with sites, {} background kept, {} background skipped, {} with cut-off "
            "pieces only, {} nodata; {} cut boxes dropped",
            settings_line,
            stats.get("tiles", 0),
            stats.get("with_sites", 0),
            stats.get("background_kept", 0),
            stats.get("background_skipped", 0),
            stats.get("cut_only_skipped", 0),
            stats.get("nodata_skipped", 0),
            stats.get("boxes_cut_dropped", 0),
        )

    @admin.display(description="what the files told")
    def georeference_report(self, obj):
        if not obj.georeferenced:
            return "—"
        rows = obj.georeferenced[:REPORT_ROWS]
        return format_html(
            '<table class="kv" id="georeference-report"><tr><th>image</th><th>found</th></tr>{}</table>',
            format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", ((r["item"], r["found"]) for r in rows)),
        )

    @admin.display(description="rejected items")
    def report(self, obj):
        if not obj.rejected:
            return "None." if obj.is_finished else "—"
        rows = obj.rejected[:REPORT_ROWS]
        more = obj.rejected_count - len(rows)
        return format_html(
            '<table class="kv" id="import-report"><tr><th>item</th><th>reason</th></tr>{}</table>{}',
            format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", ((r["item"], r["reason"]) for r in rows)),
            format_html('<p class="help">{} more in the API\'s report.</p>', more) if more > 0 else "",
        )
