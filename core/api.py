"""Shared API pieces: one JSON shape for every error, pagination, and the action-to-permission check."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from access.rules import NotVisible, can
from core.errors import ApplicationError

logger = logging.getLogger(__name__)


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def error_body(code: str, message: str, errors=None) -> dict:
    return {"code": code, "message": message, "errors": errors or {}}


def exception_handler(exc, context):
    """Every error is {"code", "message", "errors"}; a 5xx says nothing about the inside (it is logged)."""
    if isinstance(exc, ApplicationError):
        return Response(error_body("invalid", exc.message, exc.extra), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body(
                "too_large",
                f"The request body is larger than the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            ),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, SuspiciousOperation):  # too many fields or files, a malformed multipart body, ...
        logger.warning("refused request: %s", exc)
        return Response(error_body("bad_request", "The request could not be read."), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, NotVisible):
        exc = exceptions.NotFound(str(exc))
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        return Response(
            error_body("server_error", "Internal server error."), status=status.HTTP_500_INTERNAL_SERVER_ERROR
        )
    if isinstance(exc, exceptions.ValidationError):
        data = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("invalid", "Invalid input.", data)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        response.data = error_body(codes if isinstance(codes, str) else "error", str(detail))
    return response


class ActionPermission(BasePermission):
    """Each viewset maps its actions to permissions: ``action_permissions = {"publish": "app.codename"}``.

    Actions that work on one object check it globally or on that object (after the queryset has already hidden
    the objects the user may not see: those are 404). Other actions (list, create) need the global permission,
    or ``None`` for "any signed-in user" (lists are filtered to what the user may see).
    """

    def _perm(self, view):
        perms = getattr(view, "action_permissions", {})
        if view.action is None and view.request is not None and view.request.method == "OPTIONS":
            return None  # the metadata of an endpoint (also asked by the browsable API's forms): no data in it
        if view.action not in perms:
            # DRF's own exception: the browsable API asks each form's permission and expects this type; Django's
            # PermissionDenied escaped it and turned the whole page into a 403.
            raise exceptions.PermissionDenied("This action is not allowed.")
        return perms[view.action]

    def has_permission(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return False
        perm = self._perm(view)
        if perm is None or view.detail:
            return True
        return can(request.user, perm)

    def has_object_permission(self, request, view, obj):
        perm = self._perm(view)
        # Rows that belong to another object (a dataset's images and boxes) are checked on it: the viewset's
        # ``permission_object(obj)`` names it.
        holder = getattr(view, "permission_object", None)
        return perm is None or can(request.user, perm, holder(obj) if holder else obj)
