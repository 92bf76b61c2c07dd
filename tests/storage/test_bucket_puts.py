"""The small-object PUT of ``core.bucket_puts`` (dataset images, thumbnails): against the real S3 server it stores the
bytes whole, typed by their name, and a store that refuses the signature keeps nothing; against a plain HTTP
server of the test's own, which answers what S3 would not on demand (a busy store, a closed port), it tries again
with pauses and then says why, and it signs the body's own SHA-256."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from core import bucket_puts
from core.bucket_puts import object_url, put_small
from core.buckets import ATTEMPTS, Bucket
from tests.objectstore import free_ports


@pytest.fixture
def bucket(s3_server) -> Bucket:
    return Bucket(
        name=s3_server.bucket,
        prefix="",
        endpoint_url=s3_server.endpoint,
        region="us-east-1",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        addressing_style="path",
    )


@pytest.fixture
def no_pause(monkeypatch):
    monkeypatch.setattr(bucket_puts, "PAUSE", 0.01)


def test_a_put_stores_the_bytes_whole_and_typed_by_name(bucket, s3_server):
    data = bytes(range(256)) * 300
    put_small(bucket, "puts/a picture.jpg", data)  # a space: the key is quoted once, as S3 signs it
    stored = s3_server.client().get_object(Bucket=bucket.name, Key="puts/a picture.jpg")
    assert stored["Body"].read() == data and stored["ContentType"] == "image/jpeg"


def test_a_refused_signature_is_a_client_error_and_nothing_is_stored(bucket, s3_server):
    wrong = dataclasses.replace(bucket, secret_key=bucket.secret_key + "x")
    with pytest.raises(ClientError) as refused:
        put_small(wrong, "puts/refused.jpg", b"\xff\xd8 not kept")
    assert refused.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")
    listed = s3_server.client().list_objects_v2(Bucket=bucket.name, Prefix="puts/refused")
    assert listed.get("KeyCount") == 0


class Store(BaseHTTPRequestHandler):
    """Answers each PUT with the next status of ``answers`` (then 200), keeping what it was sent."""

    answers: list[int] = []
    seen: list[tuple[str, dict, bytes]] = []

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, dict(self.headers), body))
        status = self.answers.pop(0) if self.answers else 200
        error = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(status)
        self.send_header("Content-Length", str(0 if status == 200 else len(error)))
        self.end_headers()
        if status != 200:
            self.wfile.write(error)

    def log_message(self, *args):
        pass


@pytest.fixture
def store():
    Store.answers, Store.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Store)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def plain_bucket(endpoint: str) -> Bucket:
    return Bucket("b", "", endpoint, "us-east-1", "key", "secret", "path")


def test_a_busy_store_is_asked_again_and_the_body_hash_is_signed(store, no_pause):
    Store.answers = [503, 500]
    put_small(plain_bucket(f"http://127.0.0.1:{store.server_port}"), "p/x.png", b"pixels")
    assert [path for path, _, _ in Store.seen] == ["/b/p/x.png"] * 3
    _, headers, body = Store.seen[-1]
    assert body == b"pixels" and headers["Content-Type"] == "image/png"
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(b"pixels").hexdigest()
    assert "SignedHeaders=" in headers["Authorization"] and "x-amz-content-sha256" in headers["Authorization"]


def test_a_store_busy_every_time_is_a_client_error_after_every_attempt(store, no_pause):
    Store.answers = [503] * (ATTEMPTS + 1)
    with pytest.raises(ClientError, match="SlowDown") as refused:
        put_small(plain_bucket(f"http://127.0.0.1:{store.server_port}"), "p/x.jpg", b"pixels")
    assert len(Store.seen) == ATTEMPTS and refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503


def test_a_store_that_does_not_answer_is_a_connection_error(no_pause):
    (port,) = free_ports(1)  # nothing listens there
    with pytest.raises(EndpointConnectionError):
        put_small(plain_bucket(f"http://127.0.0.1:{port}"), "p/x.jpg", b"pixels")


def test_virtual_hosted_buckets_are_addressed_by_host():
    bucket = dataclasses.replace(plain_bucket("https://s3.example.org"), addressing_style="virtual")
    assert object_url(bucket, "media/a b.jpg") == "https://b.s3.example.org/media/a%20b.jpg"
