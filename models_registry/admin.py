from django.contrib import admin

from dumpsite.admin_access import AccessControlledAdmin

from .models import TrainedModel
from .selectors import models_visible_to


@admin.register(TrainedModel)
class TrainedModelAdmin(AccessControlledAdmin, admin.ModelAdmin):
    list_display = ("id", "name", "architecture", "bbox_mAP", "bbox_mAP_50", "is_published", "base_model", "dataset",
                    "created_at")
    list_filter = ("is_published", "architecture", "origin")
    search_fields = ("name", "description")
    list_select_related = ("base_model", "dataset")
    readonly_fields = [f.name for f in TrainedModel._meta.fields if f.name not in ("name", "description")]

    def visible_queryset(self, request, queryset):
        return models_visible_to(request.user, queryset)

    def has_delete_permission(self, request, obj=None):
        return False  # deletion goes through trained_model_delete (API), which keeps lineages and published models

    def has_add_permission(self, request):
        return False  # models come from runs or `manage.py register_base_model`, which check their files
