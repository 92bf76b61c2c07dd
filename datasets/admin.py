from django.contrib import admin

from dumpsite.admin_access import AccessControlledAdmin

from .models import Annotation, Dataset, DatasetClass, DatasetImage


class DatasetClassInline(admin.TabularInline):
    model = DatasetClass
    extra = 0
    fields = ("position", "name")
    ordering = ("position",)


@admin.register(Dataset)
class DatasetAdmin(AccessControlledAdmin, admin.ModelAdmin):
    list_display = ("name", "image_count", "annotation_count", "created_by", "created_at")
    search_fields = ("name", "description")
    inlines = [DatasetClassInline]
    readonly_fields = ("created_by", "created_at", "updated_at")

    def get_queryset(self, request):
        return super().get_queryset(request).with_counts().select_related("created_by")

    @admin.display(ordering="image_count", description="images")
    def image_count(self, obj):
        return obj.image_count

    @admin.display(ordering="annotation_count", description="boxes")
    def annotation_count(self, obj):
        return obj.annotation_count


@admin.register(DatasetImage)
class DatasetImageAdmin(admin.ModelAdmin):
    list_display = ("id", "original_name", "dataset", "width", "height", "enabled", "captured_at")
    list_filter = ("enabled", "dataset")
    search_fields = ("original_name", "sha256")
    list_select_related = ("dataset",)
    readonly_fields = ("image", "sha256", "width", "height", "created_at")


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ("id", "image", "dataset_class", "x", "y", "width", "height", "enabled")
    list_filter = ("enabled", "dataset_class__dataset")
    list_select_related = ("image", "dataset_class")
    raw_id_fields = ("image", "dataset_class")
