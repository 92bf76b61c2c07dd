"""Recording audit events. The interface comes from the entry point (request middleware, command, task)."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

from .models import AuditEvent

_interface: ContextVar[str] = ContextVar("audit_interface", default=AuditEvent.Interface.SYSTEM)


@contextmanager
def audit_interface(name: str):
    """Everything recorded inside the block is attributed to interface ``name``."""
    token = _interface.set(name)
    try:
        yield
    finally:
        _interface.reset(token)


def audit_record(*, action: str, obj, actor=None, **detail) -> AuditEvent:
    """Record ``action`` on a training run or trained model, in the caller's transaction."""
    return AuditEvent.objects.create(
        actor=actor if actor is not None and getattr(actor, "is_authenticated", False) else None,
        interface=_interface.get(),
        action=action,
        object_type=obj._meta.model_name,
        object_id=obj.pk,
        object_name=str(getattr(obj, "name", obj))[:200],
        detail=detail,
    )


class AuditInterfaceMiddleware:
    """Requests under /api/ are the REST API's, the rest (admin pages) the admin's."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        interface = AuditEvent.Interface.API if request.path.startswith("/api/") else AuditEvent.Interface.ADMIN
        with audit_interface(interface):
            return self.get_response(request)
