"""Request bodies are refused by their declared size before a byte of them is read, with a limit per endpoint.

A WSGI server hands Django the body as a stream of ``Content-Length`` bytes (a body without one is read as empty),
so checking the declared length first is checking every byte that could be read: a 300 MB body sent to the
sign-in door is answered 413 at once instead of being streamed into the web's temporary folder. Sign-in doors take
a few KiB; each upload endpoint takes what its files may weigh (the settings that bound those files, plus room for
the form's other fields); every other request takes ``DUMPSITE_MAX_REQUEST_BYTES``.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.utils.html import escape

from access.auth import LOGIN_PATHS
from core.api import error_body

FORM_FIELDS_BYTES = 1024 * 1024  # room for an upload form's other fields and multipart boundaries
# URL name -> the settings whose sum an upload to it may bring.
UPLOADS = {
    "dataset-import-zip": ("DUMPSITE_ZIP_MAX_BYTES",),
    "admin:datasets_dataset_import": ("DUMPSITE_ZIP_MAX_BYTES",),
    "dataset-tile-orthophoto": ("DUMPSITE_MAX_ORTHOPHOTO_BYTES", "DUMPSITE_GEOJSON_MAX_BYTES"),
    "admin:datasets_dataset_tile": ("DUMPSITE_MAX_ORTHOPHOTO_BYTES", "DUMPSITE_GEOJSON_MAX_BYTES"),
    "dataset-images": ("DUMPSITE_MAX_IMAGE_BYTES",),
    "trainedmodel-register": ("DUMPSITE_MAX_CHECKPOINT_BYTES",),
    "admin:models_registry_trainedmodel_register": ("DUMPSITE_MAX_CHECKPOINT_BYTES",),
    "trainedmodel-predict": ("DUMPSITE_MAX_IMAGE_BYTES",),
    "admin:models_registry_trainedmodel_predict": ("DUMPSITE_MAX_IMAGE_BYTES",),
    "orthophoto-list": ("DUMPSITE_MAX_ORTHOPHOTO_BYTES",),
    "detectionrun-list": ("DUMPSITE_MAX_ORTHOPHOTO_BYTES", "DUMPSITE_GEOJSON_MAX_BYTES"),  # files of one request
}


def body_limit(path: str) -> tuple[int, str]:
    """The most bytes a request body to ``path`` may have, and the setting(s) that say so."""
    if path in LOGIN_PATHS:
        return settings.DUMPSITE_SIGN_IN_MAX_BYTES, "DUMPSITE_SIGN_IN_MAX_BYTES"
    try:
        name = resolve(path).view_name
    except Resolver404:
        name = ""
    if name in UPLOADS:
        names = UPLOADS[name]
        return sum(getattr(settings, n) for n in names) + FORM_FIELDS_BYTES, " + ".join(names)
    return settings.DUMPSITE_MAX_REQUEST_BYTES, "DUMPSITE_MAX_REQUEST_BYTES"


class RequestBodyLimitMiddleware:
    """Answers 413 (400 for a malformed length) before the body is read; first in the middleware list, so no
    other middleware (the sign-in throttle, CSRF) parses a body first."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        declared = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            return _refusal(request, 400, "The request's Content-Length is not a byte count.")
        if length:
            limit, setting = body_limit(request.path_info)
            if length > limit:
                return _refusal(
                    request,
                    413,
                    f"The request body is {length:,} bytes; this endpoint accepts at most {limit:,} ({setting}).",
                )
        return self.get_response(request)


def _refusal(request, status: int, message: str):
    if request.path_info.startswith("/api/"):
        code = "too_large" if status == 413 else "bad_request"
        return JsonResponse(error_body(code, message), status=status)
    page = f"<!doctype html><title>Refused</title><h1>Refused</h1><p>{escape(message)}</p><p><a href=''>Back</a></p>"
    return HttpResponse(page, status=status, content_type="text/html; charset=utf-8")
