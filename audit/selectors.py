"""Reads of the audit trail."""

from __future__ import annotations

from django.utils.html import format_html, format_html_join

from .models import AuditEvent


def audit_trail_html(obj):
    """The object's audit events as a small table, newest first (for the run and model pages)."""
    events = AuditEvent.objects.filter(object_type=obj._meta.model_name, object_id=obj.pk).select_related("actor")
    rows = [
        (
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            e.action,
            e.actor.username if e.actor else "—",
            e.get_interface_display(),
            e.detail.get("reason", ""),
        )
        for e in events[:50]
    ]
    if not rows:
        return "—"
    return format_html(
        '<table class="kv audit-trail">{}</table>',
        format_html_join("", "<tr><td>{}</td><td><strong>{}</strong></td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
    )
