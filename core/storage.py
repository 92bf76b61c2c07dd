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

import errno
import hashlib
import io
import os
import secrets
import shutil
from pathlib import Path
from typing import IO, Any, cast

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


def is_missing(error: Any) -> bool:
    """Whether a botocore ClientError says the object is not there."""
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


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
            if is_missing(exc):
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
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.key, Range=f"bytes={self.position}-{end}", IfMatch=self.etag
            )
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                raise StoredFileChanged(self.key) from None
            raise
        self.requests += 1
        with response["Body"] as body:
            self.buffer = body.read()
        self.buffer_start = self.position


class StoredFileChanged(OSError):
    """A stored file was replaced while it was read (a run's log and events are pushed anew every few seconds)."""


def open_stored(name: str, *, chunk: int = RANGE_CHUNK) -> IO[bytes]:
    """The stored file ``name`` opened for reading by window: a plain file in the local folder, ranged GETs in a
    bucket. A context manager either way."""
    if not in_bucket():
        return open(default_storage.path(name), "rb")  # noqa: SIM115 - the caller closes it
    return cast(IO[bytes], RangeReader(bucket_key(name), chunk=chunk))


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
        client = s3_client()
        try:
            client.download_file(site_bucket().name, bucket_key(name), str(path))
        except client.exceptions.ClientError as exc:
            if is_missing(exc):
                raise FileNotFoundError(name) from None
            raise
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


def local_file(name: str) -> Path:
    """The local folder's own file of the stored name ``name`` (the local backend only: a bucket has no path)."""
    if in_bucket():
        raise RuntimeError(f"{name} is in a bucket: it has no local path")
    return Path(default_storage.path(name))


def local_path(name: str, scratch: Path) -> Path:
    """A local path to read the stored file ``name`` from: in place in the local folder (the local backend's own
    file), else fetched to ``scratch / name`` (a worker's scratch; the caller removes it). FileNotFoundError when it
    is not stored."""
    if in_bucket():
        return fetch_to(name, scratch / name)
    path = local_file(name)
    if not path.is_file():
        raise FileNotFoundError(name)
    return path


def copy_within(source: str, name: str) -> None:
    """Store a copy of the stored file ``source`` as ``name``: in a bucket the store copies it (a server-side copy,
    in parts for a large object: no byte passes through this process); in the local folder it is linked, or copied
    where the file system does not link. FileNotFoundError when ``source`` is not stored."""
    if in_bucket():
        client, bucket = s3_client(), site_bucket().name
        try:
            client.copy({"Bucket": bucket, "Key": bucket_key(source)}, bucket, bucket_key(name))
        except client.exceptions.ClientError as exc:
            if is_missing(exc):
                raise FileNotFoundError(source) from None
            raise
        return
    original, target = Path(default_storage.path(source)), Path(default_storage.path(name))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(original, target)
    except OSError:  # another file system, or a name taken: copied (a missing source raises FileNotFoundError)
        _store_locally(original, target, move=False)


class _Hashing(io.RawIOBase):
    """A file read once from start to end, hashed on the way (not seekable: the uploader reads it in order)."""

    def __init__(self, raw: Any):
        super().__init__()
        self.raw, self.digest = raw, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        count = self.raw.readinto(target)
        self.digest.update(memoryview(target)[:count])
        return count


def store_file(source: Path | str, name: str, *, move: bool = False) -> str:
    """Store the local file ``source`` under exactly ``name`` (replacing what was there) and return its sha256,
    reading it once. Whole or not at all: to a bucket it is uploaded in parts and appears when the upload completes;
    in the local folder it is written beside and renamed into place (a file of a worker's scratch, ``move``, is
    renamed when both are on one file system)."""
    source = Path(source)
    if in_bucket():
        with open(source, "rb", buffering=0) as raw:
            hashing = _Hashing(raw)
            s3_client().upload_fileobj(
                io.BufferedReader(hashing, RANGE_CHUNK),
                site_bucket().name,
                bucket_key(name),
                Config=cast(Any, default_storage).transfer_config,
            )
        digest = hashing.digest.hexdigest()
    else:
        digest = _store_locally(source, Path(default_storage.path(name)), move=move)
    if move:
        source.unlink(missing_ok=True)
    return digest


def _store_locally(source: Path, target: Path, *, move: bool) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    if move:
        try:
            os.replace(source, target)
            with open(target, "rb") as fh:
                return hashlib.file_digest(fh, "sha256").hexdigest()
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(partial, "xb") as dst:
            while chunk := src.read(RANGE_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def delete_stored(prefix: str) -> None:
    """Remove every stored file under the folder ``prefix`` (a model's, a run's); nothing when there is none."""
    prefix = prefix.strip("/")
    if not prefix or ".." in prefix.split("/"):
        raise ValueError(f"refusing to delete the stored folder {prefix!r}")
    if not in_bucket():
        shutil.rmtree(default_storage.path(prefix), ignore_errors=True)
        return
    client, bucket = s3_client(), site_bucket().name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=bucket_key(prefix) + "/"):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def delete_file(name: str) -> None:
    """Remove one stored file; nothing when it is not there."""
    if in_bucket():
        s3_client().delete_object(Bucket=site_bucket().name, Key=bucket_key(name))
    else:
        Path(default_storage.path(name)).unlink(missing_ok=True)


def stored_names(prefix: str) -> list[str]:
    """The names of the files stored directly in the folder ``prefix`` (sorted; empty when there is none)."""
    prefix = prefix.strip("/")
    if not in_bucket():
        folder = Path(default_storage.path(prefix))
        return sorted(f"{prefix}/{p.name}" for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    client, bucket, start = s3_client(), site_bucket().name, bucket_key(prefix) + "/"
    names = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start, Delimiter="/"):
        # A store may list a folder as an object of its own (a key ending in "/", as SeaweedFS does): not a file.
        names += [
            f"{prefix}/{item['Key'][len(start) :]}" for item in page.get("Contents", ()) if item["Key"][-1] != "/"
        ]
    return sorted(names)


def store_bytes(data: bytes, name: str) -> None:
    """Store the small ``data`` (a rendered picture, a dataset image) under exactly ``name``, whole or not at all: one
    PUT to a bucket, or locally a file written beside and renamed into place."""
    if in_bucket():
        # botocore is loaded only by a site that keeps its files in a bucket
        from .bucket_puts import put_small

        put_small(site_bucket(), bucket_key(name), data)
        return
    target = Path(default_storage.path(name))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        partial.write_bytes(data)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def read_stored(name: str, max_bytes: int) -> bytes | None:
    """The whole stored file ``name`` when it holds at most ``max_bytes``; None when it is not stored or larger."""
    try:
        with open_stored(name, chunk=max_bytes + 1) as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    return data if len(data) <= max_bytes else None


def read_stored_tail(name: str, max_bytes: int) -> bytes:
    """The last ``max_bytes`` of the stored file ``name`` (one ranged read); b"" when it is not stored."""
    for attempt in range(3):  # a file pushed anew between the size and the read is read again
        try:
            with open_stored(name, chunk=max_bytes) as fh:
                size = fh.seek(0, io.SEEK_END)
                fh.seek(max(0, size - max_bytes))
                return fh.read()
        except FileNotFoundError:
            return b""
        except StoredFileChanged:
            if attempt == 2:
                raise
    return b""


def storage_errors() -> tuple[type[BaseException], ...]:
    """The errors of a storage that does not answer or refuses a file (a disk full; a bucket unreachable)."""
    if not in_bucket():
        return (OSError,)
    # botocore is loaded only by a site that keeps its files in a bucket
    from botocore.exceptions import BotoCoreError, ClientError

    return (OSError, BotoCoreError, ClientError)


def missing_files(names: list[str]) -> list[str]:
    """Those of ``names`` the storage does not have (from a bucket: one listing per folder, not a request per file)."""
    if not in_bucket():
        return [name for name in names if not os.path.isfile(default_storage.path(name))]
    stored: set[str] = set()
    for folder in {os.path.dirname(name) for name in names}:
        stored.update(stored_names(folder))
    return [name for name in names if name not in stored]
