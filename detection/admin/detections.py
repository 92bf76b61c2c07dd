"""The console's list of what detection runs found: each detection with its crop, best scores first; filtered by
run, class, state and ignore zones (a run's page links to its own)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from core.admin import AccessControlledAdmin, ReadOnlyAdmin

from ..models import Detection
from ..selectors import detection_runs_visible_to


@admin.register(Detection)
class DetectionAdmin(ReadOnlyAdmin, AccessControlledAdmin, admin.ModelAdmin):
    list_display = ("crop", "id", "class_name", "score", "state", "ignored", "area", "run_link", "orthophoto_name")
    list_display_links = ("crop", "id")
    list_filter = ("state", "ignored", "class_name")
    list_select_related = ("orthophoto",)
    list_per_page = 60
    ordering = ("-score", "id")
    fields = (
        "large_crop",
        "run_link",
        "class_name",
        "score",
        "state",
        "ignored",
        "ignore_zone",
        "area",
        "orthophoto_name",
        "pixel_box",
        "coordinates",
        "merged",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ("admin_console/console.css",)}

    def visible_queryset(self, request, queryset):
        return queryset.filter(run__in=detection_runs_visible_to(request.user))

    def crop_html(self, obj, size: int):
        return format_html(
            '<img class="crop-thumb" src="{}" loading="lazy" width="{}" height="{}" alt="">',
            reverse("detection-crop", args=[obj.pk]),
            size,
            size,
        )

    @admin.display(description="crop")
    def crop(self, obj):
        return self.crop_html(obj, 96)

    @admin.display(description="crop")
    def large_crop(self, obj):
        return self.crop_html(obj, 320)

    @admin.display(description="run", ordering="run")
    def run_link(self, obj):
        url = reverse("admin:detection_detectionrun_change", args=[obj.run_id])
        return format_html('<a href="{}">run #{}</a>', url, obj.run_id)

    @admin.display(description="orthophoto")
    def orthophoto_name(self, obj):
        return f"#{obj.orthophoto_id} {obj.orthophoto.name}"

    @admin.display(description="area", ordering="area_m2")
    def area(self, obj):
        return f"{obj.area_m2:,.1f} m²" if obj.area_m2 is not None else "— (pixels)"
