"""Who may see and do what: Django model permissions (global, usually from a role group) plus django-guardian
object permissions (per object, e.g. the creator of a run).

Django's ModelBackend answers only global checks and guardian's backend only object checks, so ``can`` asks
both. ``visible`` filters a queryset in the database (a constant number of queries, whatever its size).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from guardian.shortcuts import assign_perm, get_objects_for_user
from guardian.utils import get_group_obj_perms_model, get_user_obj_perms_model

# Who acts: a user, or None (the platform itself: migrations, the worker's own transitions). Services take it as
# ``user`` or ``created_by``; an anonymous request never reaches a write (the API and the admin refuse it first).
Actor: TypeAlias = User | None


def is_direct_fk(perm_model) -> bool:
    return perm_model._meta.get_field("content_object").is_relation


def can(user, perm: str, obj=None) -> bool:
    """Global permission, or the object permission on ``obj``."""
    if not user or not user.is_authenticated or not user.is_active:
        return False
    return user.has_perm(perm) or (obj is not None and user.has_perm(perm, obj))


def require(user, perm: str, obj=None, message: str = "You may not do that.") -> None:
    """The check every service that changes something makes on its acting user: ``perm`` globally or on ``obj``.

    ``user=None`` is the platform itself (the worker finishing a run, set-up code); every interface passes a
    real user: the request's, or the command line's ``--user`` (``core.commands.cli_user``).
    """
    if user is not None and not can(user, perm, obj):
        raise PermissionDenied(message)


class NotVisible(LookupError):
    """No such object, or one the user may not see: the two are never told apart."""


def get_visible(queryset: QuerySet, pk, what: str):
    """The object ``pk`` of an already visibility-filtered ``queryset``; ``NotVisible`` ("No <what> #<pk>.")
    when it is missing or hidden alike. Interfaces look objects up through this (or DRF's get_object on the
    same filtered queryset), so a new interface cannot forget a rule."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise NotVisible(f"No {what} {pk!r}.") from None
    obj = queryset.filter(pk=pk).first()
    if obj is None:
        raise NotVisible(f"No {what} #{pk}.")
    return obj


def visible(user, perm: str, queryset: QuerySet) -> QuerySet:
    """The objects of ``queryset`` the user holds ``perm`` on, globally or per object.

    Same answer as guardian's ``get_objects_for_user(accept_global_perms=True, with_superuser=True)``, with a
    leaner filter for models with direct-foreign-key permission tables (all of ours): guardian also restricts each
    permission subquery to ``content_object IN (the queryset)``, a probe of the model's primary key per permission
    row, which made a Trainer's page of 10k runs cost twice the superuser's (bench/api_lists.py).
    """
    if not user or not user.is_authenticated or not user.is_active:
        return queryset.none()
    model: Any = queryset.model._meta.concrete_model  # a proxy (detection's DetectionRun) has its model's perms
    user_model: Any
    group_model: Any
    user_model, group_model = get_user_obj_perms_model(model), get_group_obj_perms_model(model)
    if not (is_direct_fk(user_model) and is_direct_fk(group_model)):
        return get_objects_for_user(user, perm, klass=queryset, accept_global_perms=True, with_superuser=True)
    if user.is_superuser or user.has_perm(perm):
        return queryset
    app_label, codename = perm.split(".", 1)
    meta = model._meta
    if app_label != meta.app_label:
        raise ValueError(f"{perm!r} is not a permission of {meta.label}")
    of_perm = {
        "permission__codename": codename,
        "permission__content_type__app_label": meta.app_label,
        "permission__content_type__model": meta.model_name,
    }
    by_user = user_model.objects.filter(user=user, **of_perm).values("content_object_id")
    by_group = group_model.objects.filter(group__user=user, **of_perm).values("content_object_id")
    return queryset.filter(Q(pk__in=by_user) | Q(pk__in=by_group))


def grant(user, perms: list[str], obj) -> None:
    """Give ``user`` the object permissions ``perms`` ("app.codename") on ``obj``."""
    if user is None or not user.is_authenticated:
        return
    for perm in perms:
        assign_perm(perm, user, obj)


def own_or_all(user: Actor | AnonymousUser, perm: str, queryset: QuerySet) -> QuerySet:
    """Records a user made themselves (``created_by``), or all of them for a user holding ``perm`` globally (and
    for the platform itself, ``user`` None): imports, predict checks."""
    if user is None:
        return queryset
    if not user.is_authenticated:
        return queryset.none()
    if can(user, perm):
        return queryset
    return queryset.filter(created_by=user)
