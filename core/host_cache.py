"""A worker host's own disk: its scratch folders (``host_scratch``) and its cache of stored files, keyed by their
content (sha256).

Dataset pictures are stored under their content hash and never change, so a picture fetched once for a run serves
every later run on the same host: the second run on a dataset downloads nothing. A file is fetched to a unique
temporary name, its hash checked, and moved into place: two workers of one host fetching the same picture at once
each write their own, and neither can publish a half-written or corrupt one. The cache is bounded
(``prune``: the least recently used files go first; a hit marks a file used).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

from .file_cache import prune
from .storage import copy_stored, in_bucket


class CorruptDownload(Exception):
    """The bytes fetched are not the file the database names (another hash)."""


@dataclass
class HostCache:
    root: Path
    max_bytes: int
    hits: int = 0
    misses: int = 0
    bytes_fetched: int = 0
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # fetch runs in several threads

    def path_for(self, sha256: str, suffix: str = "") -> Path:
        digest = sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / digest[:2] / f"{digest}{suffix[:16]}"

    def fetch(self, name: str, sha256: str) -> Path:
        """The local path of the stored file ``name`` whose content hash is ``sha256``: from the cache, or fetched
        into it."""
        target = self.path_for(sha256, Path(name).suffix)
        if target.is_file():
            with self._lock:
                first = sha256 not in self._seen
                self._seen.add(sha256)
                self.hits += first
            if first:
                os.utime(target)  # used now: pruned last
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
        os.close(fd)
        try:
            copy_stored(name, tmp)
            with open(tmp, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
            if digest != sha256.lower():
                raise CorruptDownload(f"stored file {name!r} is not the picture recorded ({digest[:12]}…)")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with self._lock:
            self.misses += 1
            self.bytes_fetched += target.stat().st_size
            self._seen.add(sha256)
        return target

    def prune(self) -> dict:
        return prune(self.root, self.max_bytes)

    def counts(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "bytes_fetched": self.bytes_fetched}


@dataclass
class LocalFiles:
    """Where a worker reads a set of stored files from: ``root``, and each stored name's path relative to it."""

    root: Path
    relative: dict[str, str]
    counts: dict

    def path(self, name: str) -> str:
        """The local path of the stored file ``name``, for a child's job."""
        return str(self.root / self.relative[name])


def host_scratch(*parts: str) -> Path:
    """A folder of this host's scratch disk (``DUMPSITE_WORK_ROOT``): a worker's own, never shared with the web or
    another host. ``parts`` are the platform's names (ids, random keys), never a user's text."""
    return Path(settings.TRAINING_WORK_ROOT).joinpath(*parts)


def site_host_cache() -> HostCache:
    return HostCache(Path(settings.DUMPSITE_HOST_CACHE_ROOT), settings.DUMPSITE_HOST_CACHE_MAX_BYTES)


def local_files(files: list[tuple[str, str]], *, threads: int = 8) -> LocalFiles:
    """Local paths for the stored files ``files`` (name, sha256), for a child process to read: in place in the local
    folder (the local backend's own files), fetched into this host's cache from a bucket (``threads`` at a time).
    FileNotFoundError names the first file the storage does not have."""
    if not in_bucket():
        return LocalFiles(Path(default_storage.path("")), {name: name for name, _ in files}, {})
    cache = site_host_cache()
    unique = dict(files)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        paths = list(pool.map(lambda item: cache.fetch(*item), unique.items()))
    relative = {name: str(path.relative_to(cache.root)) for name, path in zip(unique, paths, strict=True)}
    return LocalFiles(cache.root, relative, cache.counts())


def prune_host_cache() -> dict:
    """Bring this host's cache back within DUMPSITE_HOST_CACHE_MAX_BYTES (least recently used first): when a run
    ends. Nothing where the files are in the local folder (no cache is kept)."""
    return site_host_cache().prune() if in_bucket() else {}
