"""Recording audit events. The interface comes from the entry point (request middleware, command, task)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import models
from django.http import HttpRequest, HttpResponse

from access.rules import Actor
from core.interface import audit_interface, current_interface

from .models import AuditEvent


def audit_record(*, action: str, obj: models.Model, actor: Actor = None, **detail: Any) -> AuditEvent:
    """Record ``action`` on a training run or trained model, in the caller's transaction."""
    return AuditEvent.objects.create(
        actor=actor if actor is not None and getattr(actor, "is_authenticated", False) else None,
        interface=current_interface(),
        action=action,
        object_type=obj._meta.model_name or "",
        object_id=obj.pk,
        object_name=str(getattr(obj, "name", obj))[:200],
        detail=detail,
    )


class AuditInterfaceMiddleware:
    """Requests under /api/ are the REST API's, the rest (admin pages) the admin's."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        interface = AuditEvent.Interface.API if request.path.startswith("/api/") else AuditEvent.Interface.ADMIN
        with audit_interface(interface):
            return self.get_response(request)
