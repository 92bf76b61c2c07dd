"""An import's images stored by upload threads of their own (``ImageImport(upload_threads=...)``): every file stored
before its row commits, at most a bounded number waiting, and a file the storage refuses midway fails the whole
import with no row and no file left."""

from __future__ import annotations

import json
import threading
import time
import zipfile
from pathlib import Path

import pytest

from core.file_cache import stored_tree
from datasets import import_batch
from datasets.coco_import import import_coco_zip
from datasets.demo import generate_tile
from datasets.import_batch import Uploads
from datasets.models import Dataset, DatasetImage
from datasets.zips import ZipLimits, check_zip

pytestmark = pytest.mark.django_db
IMAGES = 24


def archive_of(path: Path, images: int = IMAGES) -> Path:
    doc: dict = {"categories": [{"id": 1, "name": "waste"}], "images": [], "annotations": []}
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(images):
            archive.writestr(f"images/t{index}.jpg", generate_tile(3, index, size=128).jpeg)
            doc["images"].append({"id": index + 1, "file_name": f"images/t{index}.jpg", "width": 128, "height": 128})
            doc["annotations"].append({"id": index + 1, "image_id": index + 1, "category_id": 1, "bbox": [2, 2, 9, 9]})
        archive.writestr("annotations.json", json.dumps(doc))
    return path


def imported(path: Path, name: str):
    return import_coco_zip(archive_path=path, contents=check_zip(path, ZipLimits.from_settings()), dataset_name=name)


def test_every_image_is_stored_before_its_row_commits(tmp_path, monkeypatch, settings):
    settings.DUMPSITE_IMPORT_THREADS = 2
    slow = import_batch.store_bytes

    def slow_store(data: bytes, name: str) -> None:
        time.sleep(0.01)  # the uploads lag behind the checks
        slow(data, name)

    monkeypatch.setattr(import_batch, "store_bytes", slow_store)
    report = imported(archive_of(tmp_path / "a.zip"), "uploaded")
    assert report.images == IMAGES and report.annotations == IMAGES
    names = set(DatasetImage.objects.filter(dataset=report.dataset).values_list("image", flat=True))
    assert len(names) == IMAGES and names <= {name for name, _, _ in stored_tree(f"datasets/{report.dataset.pk}")}


def test_a_file_the_storage_refuses_midway_fails_the_import_whole(tmp_path, monkeypatch, settings):
    settings.DUMPSITE_IMPORT_THREADS = 2
    store, calls = import_batch.store_bytes, []

    def refusing(data: bytes, name: str) -> None:
        calls.append(name)
        if len(calls) == 7:
            raise OSError(28, "No space left on device")
        store(data, name)

    monkeypatch.setattr(import_batch, "store_bytes", refusing)
    with pytest.raises(OSError, match="No space left"):
        imported(archive_of(tmp_path / "a.zip"), "refused midway")
    assert not Dataset.objects.filter(name="refused midway").exists() and not DatasetImage.objects.exists()
    left = {name for name, _, _ in stored_tree("datasets")} & set(calls)
    assert len(calls) >= 7 and not left  # the files stored before and after the refusal removed again


def test_uploads_hold_a_bounded_number_of_files_and_raise_the_first_failure(monkeypatch):
    lock, waiting, most = threading.Lock(), [0], [0]
    release = threading.Event()

    def store(data: bytes, name: str) -> None:
        release.wait(5)
        with lock:
            waiting[0] -= 1
        if name == "bad":
            raise OSError("refused")

    monkeypatch.setattr(import_batch, "store_bytes", store)
    uploads = Uploads(2)

    def feed() -> None:
        for n in range(20):
            with lock:
                waiting[0] += 1
                most[0] = max(most[0], waiting[0])
            uploads.store(b"x", f"f{n}")

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(0.3)
    assert most[0] <= 3 * 2 + 1 and feeder.is_alive()  # the feeder waits for room: 6 held, one in its hand
    release.set()
    feeder.join(5)
    uploads.store(b"x", "bad")
    with pytest.raises(OSError, match="refused"):
        time.sleep(0.2)
        uploads.store(b"x", "after")
    assert isinstance(uploads.finish(cancel=False), OSError)
