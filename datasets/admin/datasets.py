"""The operator console for datasets: classes with counts, images with thumbnails, a map of the tiles."""

from __future__ import annotations

import json
from functools import partial
from operator import attrgetter

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from access.rules import can
from core.admin import AccessControlledAdmin
from core.errors import ApplicationError

from ..coco_zip import export_document, zip_response
from ..imports import may_import
from ..models import Annotation, Dataset, DatasetClass, DatasetImage
from ..selectors import boxes_on_map, datasets_visible_to, datasets_with_stats, ground_resolution
from ..services import annotation_update, dataset_image_update, dataset_update
from .imports import import_page, tile_page

MAP_POINTS_LIMIT = 5000
MAP_BOXES_LIMIT = 10000


@admin.register(Dataset)
class DatasetAdmin(AccessControlledAdmin, admin.ModelAdmin):
    list_display = ("name", "image_count", "annotation_count", "created_by", "created_at")
    search_fields = ("name", "description")
    fields = (
        "name",
        "description",
        "class_counts",
        "ground_resolution",
        "images_link",
        "map",
        "created_by",
        "created_at",
        "updated_at",
    )
    readonly_fields = tuple(f for f in fields if f not in ("name", "description"))
    actions = ["export_coco_zip"]

    class Media:
        css = {"all": ("vendor/leaflet-1.9.4/leaflet.css", "admin_console/console.css")}
        js = ("vendor/leaflet-1.9.4/leaflet.js", "admin_console/dataset_map.js")

    def get_queryset(self, request):
        return datasets_with_stats(super().get_queryset(request))

    def get_urls(self):
        page = self.admin_site.admin_view(partial(import_page, self))
        tiles = self.admin_site.admin_view(partial(tile_page, self))
        return [
            path("import/", page, name="datasets_dataset_import"),
            path("tile-orthophoto/", tiles, name="datasets_dataset_tile"),
        ] + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        extra = {"can_import": may_import(request.user), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    def has_add_permission(self, request):
        return False  # datasets come from a COCO zip upload, the API, `import_coco`, which validate every item

    def has_delete_permission(self, request, obj=None):
        return False  # images, boxes and the runs trained on them hang off a dataset: no one-click delete

    def save_with_service(self, request, obj, data):
        dataset_update(dataset=obj, user=request.user, name=data.get("name"), description=data.get("description"))

    @admin.action(description="Export as a COCO zip (enabled images and boxes)")
    def export_coco_zip(self, request, queryset):
        """One dataset's COCO zip, streamed to the browser (the same archive as the API's and export_coco's)."""
        chosen = list(self.visible_queryset(request, queryset))
        if len(chosen) != 1:
            self.message_user(request, "Choose exactly one dataset to export.", messages.WARNING)
            return None
        try:
            return zip_response(export_document(chosen[0]), f"{chosen[0].name}.zip")
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return None

    @admin.display(ordering="image_count", description="images")
    def image_count(self, obj):
        return obj.image_count

    @admin.display(ordering="annotation_count", description="boxes")
    def annotation_count(self, obj):
        return obj.annotation_count

    @admin.display(description="boxes per class")
    def class_counts(self, obj):
        rows = obj.classes.annotate(
            boxes=Count("annotations", filter=Q(annotations__enabled=True, annotations__image__enabled=True)),
            images=Count("annotations__image", distinct=True),
        ).order_by("position")
        return format_html(
            '<table class="kv" id="class-counts"><tr><th>#</th><th>class</th><th>boxes</th>'
            "<th>images</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                ((c.position + 1, c.name, c.boxes, c.images) for c in rows),
            ),
        )

    @admin.display(description="ground resolution")
    def ground_resolution(self, obj):
        gsd = ground_resolution(obj)
        if gsd is None:
            return "unknown: no image has a footprint"
        return format_html(
            '<span id="ground-resolution">{} to {} cm per pixel, median {} cm ({} of {} images, from their '
            "footprints)</span>",
            *(f"{gsd[k] * 100:.1f}" for k in ("min_m", "max_m", "median_m")),
            gsd["images"],
            obj.image_count,
        )

    @admin.display(description="images")
    def images_link(self, obj):
        url = reverse("admin:datasets_datasetimage_changelist") + f"?dataset__id__exact={obj.pk}"
        return format_html('<a href="{}">{} images with thumbnails</a>', url, obj.image_count)

    @admin.display(description="map")
    def map(self, obj):
        features = []
        for pk, name, location, footprint in obj.images.exclude(location=None, footprint=None).values_list(
            "pk", "original_name", "location", "footprint"
        )[:MAP_POINTS_LIMIT]:
            features.append(
                {
                    "id": pk,
                    "name": name,
                    "point": json.loads(location.geojson) if location else None,
                    "footprint": json.loads(footprint.geojson) if footprint else None,
                }
            )
        if not features:
            return "No image has a location."
        boxes = boxes_on_map(obj, limit=MAP_BOXES_LIMIT)
        classes = obj.class_names()
        data = json.dumps(
            {"features": features, "boxes": boxes, "classes": classes, "tiles": settings.DUMPSITE_MAP_TILES_URL}
        )
        return format_html(
            '<div id="dataset-map"></div><script type="application/json" id="dataset-map-data">{}'
            '</script><p class="help">{} located images{}; {} boxes on the map{}.</p>',
            mark_safe(data.replace("<", "\\u003c")),
            len(features),
            "" if len(features) < MAP_POINTS_LIMIT else f" (first {MAP_POINTS_LIMIT})",
            len(boxes),
            "" if len(boxes) < MAP_BOXES_LIMIT else f" (first {MAP_BOXES_LIMIT})",
        )


class DatasetContentAdmin(AccessControlledAdmin, admin.ModelAdmin):
    """Rows that belong to a dataset: visible with the dataset, editable with the dataset's change permission."""

    dataset_path = "dataset"  # lookup from a row to its dataset

    def visible_queryset(self, request, queryset):
        datasets = datasets_visible_to(request.user)
        return queryset.filter(**{f"{self.dataset_path}__in": datasets})

    def get_list_filter(self, request):
        # Only the datasets this user sees: the stock filter lists every dataset's name.
        return [
            (f, admin.RelatedOnlyFieldListFilter) if f == self.dataset_path else f
            for f in super().get_list_filter(request)
        ]

    def has_change_permission(self, request, obj=None):
        dataset = attrgetter(self.dataset_path.replace("__", "."))(obj) if obj is not None else None
        return can(request.user, "datasets.change_dataset", dataset)

    def has_add_permission(self, request):
        return False  # images and boxes are validated by the services; import them


@admin.register(DatasetImage)
class DatasetImageAdmin(DatasetContentAdmin):
    list_display = ("thumbnail", "id", "original_name", "dataset", "size", "boxes", "enabled", "captured_at")
    list_display_links = ("id", "original_name")
    list_filter = ("enabled", "dataset")
    search_fields = ("original_name", "sha256")
    list_select_related = ("dataset",)
    list_per_page = 60
    fields = (
        "thumbnail",
        "dataset",
        "original_name",
        "sha256",
        "width",
        "height",
        "enabled",
        "location",
        "footprint",
        "captured_at",
        "created_at",
    )
    readonly_fields = (
        "thumbnail",
        "dataset",
        "original_name",
        "sha256",
        "width",
        "height",
        "location",
        "footprint",
        "captured_at",
        "created_at",
    )

    class Media:
        css = {"all": ("admin_console/console.css",)}

    def visible_queryset(self, request, queryset):
        return (
            super()
            .visible_queryset(request, queryset)
            .annotate(box_count=Count("annotations", filter=Q(annotations__enabled=True)))
        )

    def save_with_service(self, request, obj, data):
        dataset_image_update(image=obj, user=request.user, enabled=data["enabled"])

    @admin.display(description="")
    def thumbnail(self, obj):
        return format_html(
            '<img class="thumb" src="{}" alt="{}" loading="lazy">',
            reverse("dataset-image-thumbnail", args=[obj.pk]),
            obj.original_name,
        )

    @admin.display(description="size")
    def size(self, obj):
        return f"{obj.width}×{obj.height}"

    @admin.display(description="boxes", ordering="box_count")
    def boxes(self, obj):
        return obj.box_count


@admin.register(Annotation)
class AnnotationAdmin(DatasetContentAdmin):
    """A box is edited where it is: its image is fixed, its class is one of that image's dataset's classes, and
    ``annotation_update`` checks the box and the user's change permission on the dataset."""

    list_display = ("id", "image", "dataset_class", "x", "y", "width", "height", "enabled")
    list_filter = ("enabled", "image__dataset")
    list_select_related = ("image", "dataset_class")
    fields = ("image", "dataset_class", "x", "y", "width", "height", "polygon", "enabled")
    readonly_fields = ("image",)
    dataset_path = "image__dataset"

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if obj is not None and "dataset_class" in form.base_fields:
            form.base_fields["dataset_class"].queryset = DatasetClass.objects.filter(
                dataset_id=obj.image.dataset_id
            ).order_by("position")
        return form

    def save_with_service(self, request, obj, data):
        annotation_update(
            annotation=obj,
            user=request.user,
            dataset_class=data.get("dataset_class"),
            x=data.get("x"),
            y=data.get("y"),
            width=data.get("width"),
            height=data.get("height"),
            polygon=data.get("polygon"),
            enabled=data.get("enabled"),
        )
