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


def audit_trail_html(obj):
    """The object's audit events as a small table, newest first (for the run and model pages)."""
    from django.utils.html import format_html, format_html_join

    events = AuditEvent.objects.filter(object_type=obj._meta.model_name, object_id=obj.pk).select_related("actor")
    rows = [(e.at.strftime("%Y-%m-%d %H:%M:%S"), e.action, e.actor.username if e.actor else "—",
             e.get_interface_display(), e.detail.get("reason", "")) for e in events[:50]]
    if not rows:
        return "—"
    return format_html('<table class="kv audit-trail">{}</table>', format_html_join(
        "", "<tr><td>{}</td><td><strong>{}</strong></td><td>{}</td><td>{}</td><td>{}</td></tr>", rows))
