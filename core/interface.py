"""Which interface the current work came through (the admin, the API, the command line, a worker, the system), for
the audit trail: entry points set it around what they do, ``audit.services.audit_record`` reads it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_interface: ContextVar[str] = ContextVar("audit_interface", default="system")


@contextmanager
def audit_interface(name: str) -> Iterator[None]:
    """Everything recorded inside the block is attributed to interface ``name``."""
    token = _interface.set(name)
    try:
        yield
    finally:
        _interface.reset(token)


def current_interface() -> str:
    return _interface.get()
