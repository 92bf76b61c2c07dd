"""Caches of rendered pictures (thumbnails, evaluation gallery pictures, detection crops) kept in the storage, and
local files written whole (a worker's archives, its host cache).

- A picture is stored whole or not at all (``core.storage.store_bytes``: one PUT to a bucket; in the local folder a
  unique temporary name moved into place): two first views at once each store their own, and neither can publish a
  half-written one. A storage that refuses it is logged: the picture is shown all the same, and drawn again later.
- A cached picture is served only when it is a whole JPEG (its start and end markers); otherwise it is drawn again.
- ``prune_stored`` keeps a cache under its byte budget by removing the least recently written pictures (the
  scheduled clean-up runs it; a removed picture is drawn again on its next view); ``prune`` does it for a local
  folder.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .storage import (
    bucket_key,
    delete_file,
    in_bucket,
    local_file,
    read_stored,
    s3_client,
    site_bucket,
    storage_errors,
    store_bytes,
)

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
PICTURE_MAX_BYTES = 16 * 2**20  # a rendered picture is far smaller: anything larger is not one of ours
logger = logging.getLogger(__name__)


def cached_picture(name: str) -> bytes | None:
    """The stored picture ``name`` when it is a whole JPEG; None when it must be drawn (again)."""
    try:
        data = read_stored(name, PICTURE_MAX_BYTES)
    except storage_errors():
        logger.warning("picture %s: the storage did not answer; drawn again", name, exc_info=True)
        return None
    return data if data and data.startswith(JPEG_START) and data.endswith(JPEG_END) else None


def keep_picture(name: str, write: Callable[[BinaryIO], None]) -> bytes:
    """The picture ``write(file object)`` writes, stored as ``name`` for the next view; returned either way."""
    out = io.BytesIO()
    write(out)
    data = out.getvalue()
    try:
        store_bytes(data, name)
    except storage_errors():
        logger.warning("picture %s: not stored; drawn again next time", name, exc_info=True)
    return data


def stored_tree(prefix: str) -> list[tuple[str, int, float]]:
    """Every file stored under the folder ``prefix``, at any depth: (name, bytes, modified as a POSIX time)."""
    prefix = prefix.strip("/")
    if not in_bucket():
        root = local_file(prefix)
        found = []
        for path in root.rglob("*") if root.is_dir() else ():
            try:
                info = path.lstat()
            except OSError:
                continue
            if path.is_file() and not path.is_symlink():
                found.append((f"{prefix}/{path.relative_to(root)}", info.st_size, info.st_mtime))
        return found
    client, start = s3_client(), bucket_key(prefix) + "/"
    cut = len(bucket_key(prefix)) - len(prefix)
    return [
        (item["Key"][cut:], item["Size"], item["LastModified"].timestamp())
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=site_bucket().name, Prefix=start)
        for item in page.get("Contents", ())
        if item["Key"][-1] != "/"
    ]


def prune_stored(prefix: str, max_bytes: int, *, stale_parts_seconds: float = 3600) -> dict:
    """``prune`` for a cache kept in the storage under the folder ``prefix``."""
    now, removed, freed, files = time.time(), 0, 0, []
    for name, size, modified in stored_tree(prefix):
        if name.endswith(".part"):
            if now - modified > stale_parts_seconds:
                delete_file(name)
                removed, freed = removed + 1, freed + size
            continue
        files.append((modified, size, name))
    total = sum(size for _, size, _ in files)
    for _modified, size, name in sorted(files):
        if total <= max_bytes:
            break
        delete_file(name)
        total -= size
        removed, freed = removed + 1, freed + size
    return {"removed": removed, "freed_bytes": freed, "kept_bytes": total}


def write_atomically(target: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file object)`` on a unique temporary file beside ``target``, then move it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def whole_jpeg(path: Path) -> bool:
    """Whether ``path`` is a complete JPEG file (start and end markers), without decoding it."""
    try:
        with open(path, "rb") as fh:
            if fh.read(2) != JPEG_START:
                return False
            fh.seek(-2, os.SEEK_END)
            return fh.read(2) == JPEG_END
    except OSError:
        return False


def prune(root: Path, max_bytes: int, *, stale_parts_seconds: float = 3600) -> dict:
    """Remove the oldest files under ``root`` until the rest fit in ``max_bytes``, and temporary files left by
    writers that died. Returns what was removed."""

    files, now = [], time.time()
    removed = freed = 0
    for path in Path(root).rglob("*"):
        try:
            info = path.lstat()
        except OSError:
            continue
        if not path.is_file() or path.is_symlink():
            continue
        if path.name.endswith(".part") and now - info.st_mtime > stale_parts_seconds:
            path.unlink(missing_ok=True)
            removed, freed = removed + 1, freed + info.st_size
            continue
        files.append((info.st_mtime, info.st_size, path))
    total = sum(size for _, size, _ in files)
    for _mtime, size, path in sorted(files, key=lambda item: item[0]):
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
        removed, freed = removed + 1, freed + size
    return {"removed": removed, "freed_bytes": freed, "kept_bytes": total}
