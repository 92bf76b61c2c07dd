"""Zip archives streamed chunk by chunk (never whole in memory): a write-only pipe zipfile writes to and a response
reads from, and an archive of stored files."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from .storage import open_stored

CHUNK = 1024 * 1024


class ZipPipe(io.RawIOBase):
    """A write-only stream whose bytes are taken out as they come (zipfile writes to it; the response reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def stream_stored_zip(members: Iterable[tuple[str, str]], *, compress: bool = True) -> Iterator[bytes]:
    """A zip of stored files, ``(name in the archive, stored name)`` each, as chunks."""
    pipe = ZipPipe()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(pipe, "w", compression=method) as archive:
        for arcname, stored in members:
            with open_stored(stored) as source, archive.open(arcname, "w") as target:
                while block := source.read(CHUNK):
                    target.write(block)
                    yield pipe.take()
    yield pipe.take()
