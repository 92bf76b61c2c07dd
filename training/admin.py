from django.contrib import admin
from django.utils.html import format_html

from dumpsite.admin_access import AccessControlledAdmin

from .models import TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(AccessControlledAdmin, admin.ModelAdmin):
    list_display = ("id", "name", "status", "progress", "dataset", "architecture", "base_model", "created_by",
                    "created_at")
    list_filter = ("status", "architecture", "dataset")
    search_fields = ("name", "dataset__name")
    list_select_related = ("dataset", "base_model", "created_by")
    readonly_fields = [f.name for f in TrainingRun._meta.fields]

    def has_delete_permission(self, request, obj=None):
        return False  # deletion goes through training_run_delete (API), which refuses unfinished runs

    def has_add_permission(self, request):
        return False  # runs are created through the service (API, `manage.py train`), which validates them

    @admin.display(description="progress")
    def progress(self, obj):
        return format_html('<progress max="100" value="{}"></progress> {}%', obj.progress_percent,
                           round(obj.progress_percent))
