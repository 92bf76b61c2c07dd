"""Who may see and do what: Django model permissions (global, usually from a role group) plus django-guardian
object permissions (per object, e.g. the creator of a run).

Django's ModelBackend answers only global checks and guardian's backend only object checks, so ``can`` asks
both. ``visible`` filters a queryset in the database (a constant number of queries, whatever its size).
"""

from __future__ import annotations

from django.db.models import QuerySet
from guardian.shortcuts import assign_perm, get_objects_for_user


def can(user, perm: str, obj=None) -> bool:
    """Global permission, or the object permission on ``obj``."""
    if not user or not user.is_authenticated or not user.is_active:
        return False
    return user.has_perm(perm) or (obj is not None and user.has_perm(perm, obj))


def visible(user, perm: str, queryset: QuerySet) -> QuerySet:
    """The objects of ``queryset`` the user holds ``perm`` on, globally or per object."""
    if not user or not user.is_authenticated or not user.is_active:
        return queryset.none()
    return get_objects_for_user(user, perm, klass=queryset, accept_global_perms=True, with_superuser=True)


def grant(user, perms: list[str], obj) -> None:
    """Give ``user`` the object permissions ``perms`` ("app.codename") on ``obj``."""
    if user is None or not user.is_authenticated:
        return
    for perm in perms:
        assign_perm(perm, user, obj)
