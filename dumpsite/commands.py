"""Small helpers shared by management commands: one-line failures and user lookup."""

from __future__ import annotations

from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from dumpsite.errors import ApplicationError


@contextmanager
def cli_call():
    """The command's work is attributed to the command line in the audit trail, and a rule violation ends the
    command with exit status 1 and a one-line reason."""
    from audit.services import audit_interface

    try:
        with audit_interface("cli"):
            yield
    except ApplicationError as exc:
        raise CommandError(" ".join(str(exc).split())) from exc


def get_user_or_none(username: str | None):
    if not username:
        return None
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"No user named {username!r}.") from None
