"""Caches of rendered pictures (thumbnails, evaluation gallery pictures): written atomically under unique names,
checked before being served, and bounded in size.

- A picture is written to a unique temporary name in its folder and moved into place (``os.replace``): two first
  views at once each write their own file, and neither can publish a half-written one.
- A cached file is served only when it is a whole JPEG (its start and end markers); otherwise it is drawn again.
- ``prune`` keeps a cache under its byte budget by removing the least recently written files (the scheduled
  clean-up runs it; a removed picture is drawn again on its next view).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


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
