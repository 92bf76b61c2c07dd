from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only. Visible to users with the audit view permission (the Administrator role)."""

    list_display = ("at", "object_type", "object_id", "object_name", "action", "actor", "interface")
    list_filter = ("action", "interface", "object_type")
    search_fields = ("object_name", "actor__username")
    list_select_related = ("actor",)
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
