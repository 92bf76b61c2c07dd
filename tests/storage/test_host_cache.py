"""A worker host's cache of stored pictures, keyed by their sha256: the second pass downloads nothing, a file that is
not the recorded picture never enters it, and it stays within its budget keeping what was used last."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from core.host_cache import CorruptDownload, HostCache, local_files


def stored(count: int, size: int = 50_000) -> list[tuple[str, str]]:
    files = []
    for content in (os.urandom(size) for _ in range(count)):
        sha = hashlib.sha256(content).hexdigest()
        files.append((default_storage.save(f"datasets/1/images/{sha}.jpg", io.BytesIO(content)), sha))
    return files


@pytest.mark.parametrize("where", ["bucket", "local folder"])
def test_the_second_pass_over_the_same_pictures_downloads_nothing(request, tmp_path, where):
    if where == "bucket":
        request.getfixturevalue("bucket_storage")
    files = stored(6)
    first = HostCache(tmp_path / "cache", max_bytes=10**9)
    paths = [first.fetch(name, sha) for name, sha in files]
    assert first.counts() == {"hits": 0, "misses": 6, "bytes_fetched": 6 * 50_000}
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths] == [sha for _, sha in files]
    second = HostCache(tmp_path / "cache", max_bytes=10**9)  # the next run on this host
    assert [second.fetch(name, sha) for name, sha in files] == paths
    assert second.counts() == {"hits": 6, "misses": 0, "bytes_fetched": 0}


def test_a_stored_file_that_is_not_the_recorded_picture_never_enters_the_cache(bucket_storage, tmp_path):
    (name, sha), (other, _) = stored(2)
    cache = HostCache(tmp_path / "cache", max_bytes=10**9)
    with pytest.raises(CorruptDownload, match="is not the picture recorded"):
        cache.fetch(other, sha)  # the bytes of another file under this hash
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert cache.fetch(name, sha).is_file()
    with pytest.raises(ValueError, match="not a sha256"):
        cache.path_for("../../etc/passwd")


def test_the_cache_keeps_its_budget_and_what_was_used_last(bucket_storage, tmp_path):
    files = stored(5, size=100_000)
    cache = HostCache(tmp_path / "cache", max_bytes=350_000)
    paths = [cache.fetch(name, sha) for name, sha in files]
    past = time.time() - 3600
    for path in paths:
        os.utime(path, (past, past))
    reused = HostCache(tmp_path / "cache", max_bytes=350_000)
    reused.fetch(*files[0])  # used again: kept
    reused.prune()
    kept = {p for p in paths if p.exists()}
    assert paths[0] in kept and len(kept) == 3


@pytest.mark.django_db
def test_a_worker_reads_pictures_in_place_or_from_its_cache_which_a_run_that_ends_prunes(
    request, tmp_path, settings, make_dataset
):
    from training.execution.scratch import cleanup_work_dir
    from training.services import training_run_create

    files = stored(3, size=100_000)
    local = local_files(files)  # the local folder: read in place, nothing fetched
    assert local.root == Path(settings.MEDIA_ROOT) and local.counts == {}
    for name, _ in files:
        assert (local.root / local.relative[name]).read_bytes() == default_storage.open(name).read()

    request.getfixturevalue("bucket_storage")
    settings.DUMPSITE_HOST_CACHE_ROOT, settings.DUMPSITE_HOST_CACHE_MAX_BYTES = tmp_path / "cache", 250_000
    files = stored(3, size=100_000)
    fetched = local_files(files + files[:1])  # a picture named twice is fetched once
    assert fetched.root == tmp_path / "cache" and fetched.counts == {"hits": 0, "misses": 3, "bytes_fetched": 300_000}
    for name, sha in files:
        assert hashlib.sha256((fetched.root / fetched.relative[name]).read_bytes()).hexdigest() == sha
    with pytest.raises(FileNotFoundError):
        local_files([("datasets/1/images/gone.jpg", "0" * 64)])

    cleanup_work_dir(training_run_create(dataset=make_dataset()))  # a run ends on this host
    kept = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(kept) == 2 and sum(p.stat().st_size for p in kept) <= 250_000
