"""The platform's files through its storage (``STORAGES["default"]``): the local folder, or a bucket of an S3-compatible
store (``dumpsite/object_storage.py`` reads which from the environment).

Large files stream both ways. Writing goes through the storage's ``save`` (django-storages uploads in parts, 8 MiB
each by default: a 10 GB checkpoint never sits in memory). Reading a stored file by window, as a zip archive
or a checkpoint header is read, is :func:`open_stored`: a seekable file whose reads from a bucket are ranged GETs
through a buffer of ``RANGE_CHUNK`` bytes, never the whole object (django-storages' own ``open`` downloads the whole
object to a temporary file first). A download may redirect to a short-lived presigned URL (:func:`download_url`) so
that no web process carries a multi-GB body.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase

from .buckets import Bucket

RANGE_CHUNK = 1 * 2**20  # bytes fetched by one ranged GET at least (a zip's central directory, a tile's strip)


def in_bucket() -> bool:
    """Whether this site keeps its files in object storage (else in the local folder MEDIA_ROOT)."""
    return settings.DUMPSITE_BUCKET is not None


def site_bucket() -> Bucket:
    bucket = settings.DUMPSITE_BUCKET
    if bucket is None:
        raise RuntimeError("this site keeps its files in the local folder, not in a bucket")
    return bucket


def bucket_key(name: str) -> str:
    """The object key of the stored file ``name`` (the bucket's prefix, then the name)."""
    prefix = site_bucket().prefix
    return f"{prefix}/{name}" if prefix else name


def s3_client() -> Any:
    """The boto3 client of the configured bucket (the storage's own connection, thread-local in django-storages)."""
    return cast(Any, default_storage).connection.meta.client


class RangeReader(io.RawIOBase):
    """A stored object of a bucket as a read-only, seekable file: each read past the buffer is one ranged GET of at
    least ``chunk`` bytes. What zipfile, a checkpoint's header or a JSON stream need, without the whole object."""

    def __init__(self, key: str, *, chunk: int = RANGE_CHUNK, client: Any = None):
        super().__init__()
        self.client = client or s3_client()
        self.bucket, self.key, self.chunk = site_bucket().name, key, chunk
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(key) from None
            raise
        self.size: int = head["ContentLength"]
        self.etag: str = head.get("ETag", "")
        self.position = 0
        self.buffer_start, self.buffer = 0, b""
        self.requests = 0  # ranged GETs made: the tests and the benchmarks count them

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        wanted = min(len(view), max(0, self.size - self.position))
        if wanted == 0:
            return 0
        offset = self.position - self.buffer_start
        if not (offset >= 0 and offset + wanted <= len(self.buffer)):
            self._fill(wanted)
            offset = 0
        view[:wanted] = self.buffer[offset : offset + wanted]
        self.position += wanted
        return wanted

    def _fill(self, wanted: int) -> None:
        end = min(self.size, self.position + max(wanted, self.chunk)) - 1
        # If-Match: a file replaced under the reader fails loudly instead of mixing two versions' bytes.
        response = self.client.get_object(
            Bucket=self.bucket, Key=self.key, Range=f"bytes={self.position}-{end}", IfMatch=self.etag
        )
        self.requests += 1
        with response["Body"] as body:
            self.buffer = body.read()
        self.buffer_start = self.position


def open_stored(name: str, *, chunk: int = RANGE_CHUNK) -> io.BufferedReader | io.RawIOBase:
    """The stored file ``name`` opened for reading by window: a plain file in the local folder, ranged GETs in a
    bucket. A context manager either way."""
    if not in_bucket():
        return open(default_storage.path(name), "rb")  # noqa: SIM115 - the caller closes it
    return RangeReader(bucket_key(name), chunk=chunk)


def download_url(name: str, *, filename: str) -> str | None:
    """A presigned URL of the stored file, valid DUMPSITE_S3_PRESIGN_SECONDS, that downloads as ``filename``; None
    where downloads are not redirected (the local folder, or DUMPSITE_S3_PRESIGNED_DOWNLOADS off)."""
    if not (in_bucket() and settings.DUMPSITE_S3_PRESIGNED_DOWNLOADS):
        return None
    safe = "".join(c if c.isalnum() or c in "._- " else "_" for c in os.path.basename(filename)) or "download"
    return s3_client().generate_presigned_url(
        "get_object",
        Params={
            "Bucket": site_bucket().name,
            "Key": bucket_key(name),
            "ResponseContentDisposition": f'attachment; filename="{safe}"',
        },
        ExpiresIn=settings.DUMPSITE_S3_PRESIGN_SECONDS,
    )


def stored_file_response(name: str, *, filename: str, content_type: str) -> HttpResponseBase:
    """A download of the stored file ``name`` as ``filename``: a redirect to a presigned URL where the site asks for
    them (the web process carries no body), else the file streamed (from a bucket by ranged GETs, never whole).
    FileNotFoundError when it is not stored."""
    url = download_url(name, filename=filename)
    if url is not None:
        return HttpResponseRedirect(url)
    handle = open_stored(name)
    return FileResponse(
        io.BufferedReader(handle, RANGE_CHUNK) if isinstance(handle, RangeReader) else handle,
        as_attachment=True,
        filename=filename,
        content_type=content_type,
    )


def copy_stored(name: str, path: Path | str) -> None:
    """Copy the stored file ``name`` to the local ``path`` (downloaded in parts from a bucket)."""
    if in_bucket():
        s3_client().download_file(site_bucket().name, bucket_key(name), str(path))
    else:
        shutil.copyfile(default_storage.path(name), path)


def fetch_to(name: str, target: Path) -> Path:
    """The stored file ``name`` copied to the local path ``target`` (a worker's scratch), streamed in parts; the
    target appears whole or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    copy_stored(name, partial)
    os.replace(partial, target)
    return target
