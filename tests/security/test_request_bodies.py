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
