"""Signing in: API tokens that expire, a token endpoint, and a throttle on every sign-in door.

Tokens are DRF's (one per user); ``DUMPSITE_TOKEN_TTL`` seconds after it was made a token stops working, and
``POST /api/auth/token/`` with a username and password replaces it with a fresh one. Sign-in requests (the admin's
and the browsable API's login pages, the token endpoint) are counted per client address and per username in the
shared cache; past ``DUMPSITE_LOGIN_RATE`` they are answered 429 without checking the password.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

LOGIN_PATHS = ("/admin/login/", "/api/auth/login/", "/api/auth/token/")
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def token_expires_at(token):
    ttl = settings.DUMPSITE_TOKEN_TTL
    return token.created + timedelta(seconds=ttl) if ttl else None


class ExpiringTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, refusing tokens older than ``DUMPSITE_TOKEN_TTL`` seconds."""

    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        expires = token_expires_at(token)
        if expires is not None and timezone.now() >= expires:
            raise exceptions.AuthenticationFailed("Token has expired; get a new one from POST /api/auth/token/.")
        return user, token


def _rate() -> tuple[int, int]:
    count, _, unit = str(settings.DUMPSITE_LOGIN_RATE).partition("/")
    return int(count), _UNITS.get(unit.rstrip("s"), 60)


def _hit(key: str, window: int) -> int:
    cache.add(key, 0, timeout=window)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window)
        return 1


class LoginThrottleMiddleware:
    """Counts POSTs to the sign-in doors per client address and per username; past the rate, 429."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST" and request.path in LOGIN_PATHS:
            limit, window = _rate()
            # The address is counted before the body is parsed: past the rate, nothing of the request is read.
            # (Bodies over DUMPSITE_SIGN_IN_MAX_BYTES never got here: dumpsite.body_limits refused them unread.)
            if _hit(f"login:addr:{self._address(request)}", window) > limit:
                return self._too_many(request, window)
            username = self._username(request)
            if username and _hit(f"login:user:{hashlib.sha256(username.encode()).hexdigest()}", window) > limit:
                return self._too_many(request, window)
        return self.get_response(request)

    @staticmethod
    def _address(request) -> str:
        """The client's address. Behind the trusted proxy (DJANGO_SECURE_PROXY_SSL) every request comes from the
        proxy, which appends the real client to X-Forwarded-For: its last entry is the one to count."""
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if settings.SECURE_PROXY_SSL_HEADER and forwarded:
            return forwarded.split(",")[-1].strip()
        return request.META.get("REMOTE_ADDR", "")

    @staticmethod
    def _username(request) -> str:
        try:
            if request.content_type == "application/json":
                body = json.loads(request.body or b"{}")
                return str(body.get("username", "")).casefold()[:150] if isinstance(body, dict) else ""
            return request.POST.get("username", "").casefold()[:150]
        except Exception:  # noqa: BLE001 - an unreadable body is left to the view to refuse
            return ""

    @staticmethod
    def _too_many(request, window: int):
        message = f"Too many sign-in attempts; try again in {window} seconds."
        response: HttpResponse
        if request.path.startswith("/api/"):
            response = JsonResponse({"code": "throttled", "message": message, "errors": {}}, status=429)
        else:
            response = HttpResponse(message, status=429, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(window)
        return response
