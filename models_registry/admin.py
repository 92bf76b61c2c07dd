from django.contrib import admin

from .models import TrainedModel


@admin.register(TrainedModel)
class TrainedModelAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "architecture", "bbox_mAP", "bbox_mAP_50", "is_published", "base_model", "dataset",
                    "created_at")
    list_filter = ("is_published", "architecture", "origin")
    search_fields = ("name", "description")
    list_select_related = ("base_model", "dataset")
    readonly_fields = [f.name for f in TrainedModel._meta.fields if f.name not in ("name", "description")]

    def has_add_permission(self, request):
        return False  # models come from runs or `manage.py register_base_model`, which check their files
