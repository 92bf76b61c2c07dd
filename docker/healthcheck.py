"""The web container's health: its server answers HTTP. Any status below 500 counts (a redirect to HTTPS, or a
Host name not in DJANGO_ALLOWED_HOSTS, still come from a live server)."""

import http.client
import os
import sys

connection = http.client.HTTPConnection("127.0.0.1", int(os.environ.get("PORT", "8000")), timeout=8)
try:
    connection.request("GET", "/admin/login/")
    status = connection.getresponse().status
except OSError as exc:
    print(f"web: {exc}", file=sys.stderr)
    sys.exit(1)
sys.exit(0 if status < 500 else 1)
