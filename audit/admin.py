from django.contrib import admin

from core.admin import ReadOnlyAdmin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Read-only. Visible to users with the audit view permission (the Administrator role)."""

    list_display = ("at", "object_type", "object_id", "object_name", "action", "actor", "interface")
    list_filter = ("action", "interface", "object_type")
    search_fields = ("object_name", "actor__username")
    list_select_related = ("actor",)
    readonly_fields = [f.name for f in AuditEvent._meta.fields]
