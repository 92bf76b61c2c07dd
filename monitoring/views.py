"""``/metrics``: what Prometheus scrapes. Open to a scraper that shows the bearer token (DUMPSITE_METRICS_TOKEN) or
comes from an allowed network (DUMPSITE_METRICS_ALLOWED_NETWORKS); to nobody when neither is set. Under gunicorn
with PROMETHEUS_MULTIPROC_DIR set, the HTTP and database metrics are the sum of every worker process's."""

from __future__ import annotations

import hmac
import ipaddress
import os

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from .collectors import PlatformCollector


def allowed(request: HttpRequest) -> bool:
    token = settings.DUMPSITE_METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    networks = [ipaddress.ip_network(n, strict=False) for n in settings.DUMPSITE_METRICS_ALLOWED_NETWORKS]
    return any(address in network for network in networks)


def registry() -> CollectorRegistry:
    """This process's metrics (or every gunicorn worker's, in multiprocess mode) and the platform's."""
    found = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(found)
    else:
        found.register(_Everything())
    found.register(PlatformCollector())
    return found


class _Everything:
    """The default registry's collectors (django-prometheus's, the process's), as one collector."""

    def collect(self):
        return REGISTRY.collect()


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not allowed(request):
        reason = "Metrics need the bearer token (DUMPSITE_METRICS_TOKEN) or a scraper in the allowed networks."
        response = HttpResponse(reason + "\n", status=403, content_type="text/plain")
        if settings.DUMPSITE_METRICS_TOKEN:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
