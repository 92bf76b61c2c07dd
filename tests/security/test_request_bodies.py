"""Request bodies are refused by their declared length before a byte is read (300 MB to the sign-in door: 413 at
once, not read then 400), with the limit per endpoint; the sign-in throttle counts an address before it parses."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from dumpsite.body_limits import body_limit

pytestmark = pytest.mark.django_db


class CountingStream(io.RawIOBase):
    """A request body of ``size`` bytes that records how many were read."""

    def __init__(self, size: int):
        self.size, self.read_bytes = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.read_bytes)
        buffer[:n] = b"u" * n
        self.read_bytes += n
        return n


def post(client, path: str, size: int, content_type: str = "application/x-www-form-urlencoded"):
    stream = CountingStream(size)
    response = client.generic(
        "POST", path, b"", content_type=content_type, CONTENT_LENGTH=str(size), **{"wsgi.input": stream}
    )
    return response, stream


def test_a_300_mb_anonymous_body_to_the_sign_in_doors_is_refused_unread():
    for path in ("/api/auth/token/", "/admin/login/", "/api/auth/login/"):
        response, stream = post(Client(), path, 300_000_392)
        assert response.status_code == 413, (path, response.status_code)
        assert stream.read_bytes == 0
        assert "DUMPSITE_SIGN_IN_MAX_BYTES" in response.content.decode()
    assert response.status_code == 413


def test_each_upload_endpoint_has_its_own_limit(settings, roles):
    settings.DUMPSITE_MAX_IMAGE_BYTES = 5 * 2**20
    limit, names = body_limit("/api/trained-models/1/predict/")
    assert (limit, names) == (6 * 2**20, "DUMPSITE_MAX_IMAGE_BYTES")
    assert (
        body_limit("/api/datasets/tile-orthophoto/")[1] == "DUMPSITE_MAX_ORTHOPHOTO_BYTES + DUMPSITE_GEOJSON_MAX_BYTES"
    )
    assert body_limit("/admin/datasets/dataset/import/")[1] == "DUMPSITE_ZIP_MAX_BYTES"
    assert body_limit("/api/datasets/")[0] == settings.DUMPSITE_MAX_REQUEST_BYTES
    uploads = {  # every endpoint that takes a file, and the setting that bounds it
        "/api/datasets/import/": "DUMPSITE_ZIP_MAX_BYTES",
        "/admin/datasets/dataset/import/": "DUMPSITE_ZIP_MAX_BYTES",
        "/api/datasets/tile-orthophoto/": "DUMPSITE_MAX_ORTHOPHOTO_BYTES + DUMPSITE_GEOJSON_MAX_BYTES",
        "/admin/datasets/dataset/tile-orthophoto/": "DUMPSITE_MAX_ORTHOPHOTO_BYTES + DUMPSITE_GEOJSON_MAX_BYTES",
        "/api/datasets/3/images/": "DUMPSITE_MAX_IMAGE_BYTES",
        "/api/trained-models/register/": "DUMPSITE_MAX_CHECKPOINT_BYTES",
        "/admin/models_registry/trainedmodel/register/": "DUMPSITE_MAX_CHECKPOINT_BYTES",
        "/api/trained-models/3/predict/": "DUMPSITE_MAX_IMAGE_BYTES",
        "/admin/models_registry/trainedmodel/3/predict/": "DUMPSITE_MAX_IMAGE_BYTES",
    }
    assert {path: body_limit(path)[1] for path in uploads} == uploads

    admin = User.objects.create_user("limits-admin")
    admin.groups.add(Group.objects.get(name="Administrator"))
    client = Client()
    client.force_login(admin)
    response, stream = post(client, "/api/trained-models/1/predict/", 6 * 2**20 + 1, "multipart/form-data; boundary=x")
    assert response.status_code == 413 and stream.read_bytes == 0
    assert response.json() == {
        "code": "too_large",
        "message": "The request body is 6,291,457 bytes; this endpoint accepts at most 6,291,456 "
        "(DUMPSITE_MAX_IMAGE_BYTES).",
        "errors": {},
    }
    settings.DUMPSITE_ZIP_MAX_BYTES = 10
    response, stream = post(client, "/admin/datasets/dataset/import/", 2 * 2**20, "multipart/form-data; boundary=x")
    assert response.status_code == 413 and stream.read_bytes == 0
    assert "DUMPSITE_ZIP_MAX_BYTES" in response.content.decode() and response["Content-Type"].startswith("text/html")
    # Other requests: DUMPSITE_MAX_REQUEST_BYTES; a malformed length is a 400.
    response, stream = post(client, "/api/datasets/", settings.DUMPSITE_MAX_REQUEST_BYTES + 1, "application/json")
    assert response.status_code == 413 and stream.read_bytes == 0
    response = client.generic("POST", "/api/datasets/", b"{}", content_type="application/json", CONTENT_LENGTH="-5")
    assert response.status_code == 400


def test_the_sign_in_throttle_counts_the_address_before_it_reads_the_body(settings):
    settings.DUMPSITE_LOGIN_RATE = "2/minute"
    client = Client()
    for _ in range(2):
        response = client.post("/api/auth/token/", {"username": "nobody", "password": "x"})
        assert response.status_code == 400
    response, stream = post(client, "/api/auth/token/", 9_000)
    assert response.status_code == 429 and stream.read_bytes == 0


def test_a_live_gunicorn_answers_413_after_the_headers_and_closes(tmp_path):
    """Through the server the container runs: the answer comes after the headers and 1 KiB of the body; the rest
    is never awaited (the sync worker closes the connection instead of draining 300 MB)."""
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "dumpsite.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=root,
        env={**os.environ, "DJANGO_ALLOWED_HOSTS": "127.0.0.1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "gunicorn did not start"
                time.sleep(0.2)
        with client:
            client.sendall(
                b"POST /api/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 300000392\r\n\r\n" + b"{" * 1024
            )
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"DUMPSITE_SIGN_IN_MAX_BYTES" in answer
    finally:
        server.terminate()
        server.wait(timeout=30)
