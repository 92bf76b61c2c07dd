"""Small helpers shared by management commands: who acts, and one-line failures.

A command acts as a named user and obeys the same rules as the API and the admin: ``--user NAME``, or the
``DUMPSITE_CLI_USER`` environment variable, or, when neither is given, the one administrator account (a superuser
or a member of the Administrator group). With several administrators the command asks which one acts.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.contrib.gis.gdal import GDALException
from django.contrib.gis.geos import GEOSException
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.core.management.base import CommandError
from django.db.models import Q

from access.rules import NotVisible
from core.errors import ApplicationError
from core.interface import audit_interface

USER_HELP = (
    "Username the command acts as (its permissions apply; it is recorded in the audit trail). Default: "
    "$DUMPSITE_CLI_USER, else the only administrator account."
)


@contextmanager
def cli_call():
    """The command's work is attributed to the command line in the audit trail, and a refusal (a rule violation,
    a missing permission, an object that is not there or not visible) ends the command with exit status 1 and a
    one-line reason."""
    try:
        with audit_interface("cli"):
            yield
    except (ApplicationError, PermissionDenied, NotVisible) as exc:
        raise CommandError(" ".join(str(exc).split()) or "Permission denied.") from exc
    except SuspiciousOperation as exc:
        raise CommandError(f"Refused: {' '.join(str(exc).split())}") from exc
    except (GDALException, GEOSException) as exc:
        raise CommandError(f"The geodata could not be read ({type(exc).__name__}): {_first_line(exc)}") from exc
    except OSError as exc:
        raise CommandError(f"{exc.filename or 'A file'}: {exc.strerror or _first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def administrators():
    return (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(groups__name="Administrator"))
        .distinct()
        .order_by("username")
    )


def cli_user(username: str | None):
    """The user a command acts as (see the module's docstring). Never None: the command line has no bypass."""
    User = get_user_model()
    username = username or os.environ.get("DUMPSITE_CLI_USER") or None
    if username:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if not user.is_active:
            raise CommandError(f"User {username!r} is inactive.")
        return user
    admins = list(administrators()[:6])
    if len(admins) == 1:
        return admins[0]
    if not admins:
        raise CommandError(
            "No administrator account exists to act as: create one (manage.py createsuperuser, or "
            "scripts/setup.sh makes 'operator') or pass --user NAME."
        )
    names = ", ".join(a.username for a in admins[:5]) + (", ..." if len(admins) > 5 else "")
    raise CommandError(
        f"Several administrators exist ({names}); pass --user NAME (or set DUMPSITE_CLI_USER) to say who acts."
    )


def ensure_operator(username: str = "operator") -> str | None:
    """Create an administrator ``username`` without a usable password when no administrator exists, so that
    commands have someone to act as on a fresh installation. Returns the name created, or None."""
    if administrators().exists():
        return None
    User = get_user_model()
    user, _ = User.objects.get_or_create(username=username)
    user.is_superuser = user.is_staff = user.is_active = True
    user.set_unusable_password()
    user.save()
    return username
