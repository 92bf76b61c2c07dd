"""A webhook receiver of the tests' own: a real HTTP server on the loopback address that records every request,
answers what it is told to (a status per request, a redirect, a slow or a long answer), and checks signatures the
way docs/operations.md tells receivers to."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verify(
    secret: str, headers: dict[str, str], body: bytes, *, tolerance: float = 300, now: float | None = None
) -> bool:
    """The receiver's check, as docs/operations.md shows it: the timestamp within 5 minutes, the HMAC-SHA256 of
    ``"<timestamp>." + body`` equal (in constant time) to the ``X-Signature`` header."""
    stamp = headers.get("X-Dumpsite-Timestamp", "")
    if not stamp.isdigit() or abs((now or time.time()) - int(stamp)) > tolerance:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("X-Signature", ""))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """``answers``: statuses for the next requests, in order (then 200); ``delay``: seconds before answering;
    ``redirect_to``: answer 302 with this Location; ``answer_bytes``: the answer's length."""

    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    redirect_to: str = ""
    answer_bytes: int = 2
    received: list[Received] = field(default_factory=list)

    def __post_init__(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(Received(self.path, dict(self.headers.items()), body, time.time()))
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.answers.pop(0) if receiver.answers else 200
                if receiver.redirect_to:
                    status = 302
                self.send_response(status)
                if receiver.redirect_to:
                    self.send_header("Location", receiver.redirect_to)
                payload = b"x" * receiver.answer_bytes
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST  # noqa: N815 - a followed redirect would arrive as a GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/dumpsite"

    def of_event(self, event: str) -> list[Received]:
        return [r for r in self.received if r.headers.get("X-Dumpsite-Event") == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
