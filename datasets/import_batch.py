"""What the importers share (COCO files and zips, orthophoto tilings, the demo, labelling tasks): many images as one
unit (``ImageImport``), the report, the target dataset and its classes, the threads that decode, hash and store
images, and the batched INSERTs."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_all
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from access.rules import require
from core.errors import ApplicationError
from core.storage import store_bytes

from .models import Dataset, DatasetClass, DatasetImage
from .services import (
    annotations_bulk_create,
    dataset_classes_add,
    dataset_create,
    dataset_image_build,
    dataset_image_create,
)

BATCH = 200  # images per INSERT


class ImageImport:
    """Many images as one unit: one transaction, and every file it stored removed again if it does not commit.

    ``dataset_image_create`` on its own keeps its row and its file together; an import of many images (whose rows
    roll back together) goes through this object, so that no file outlives its row::

        with ImageImport() as batch:
            dataset = dataset_create(...)
            image = batch.add(dataset=dataset, content=..., original_name=...)

    With ``upload_threads``, the files of ``build`` are stored by threads of their own (``Uploads``) while the
    caller's threads check the next images: as many uploads in flight as there are such threads, as many as a plain
    loop of PUTs on as many threads keeps. Every upload has ended before the rows commit, and a failed one fails the
    import.
    """

    def __init__(self, *, upload_threads: int = 0) -> None:
        self.stored: list[str] = []
        self.uploads = Uploads(upload_threads) if upload_threads else None
        self._atomic = transaction.atomic()

    def __enter__(self) -> ImageImport:
        self._atomic.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        failed = self.uploads.finish(cancel=exc_type is not None) if self.uploads is not None else None
        raised = failed if exc_type is None else None  # every row was written, one of the files was not stored
        if raised is not None:
            exc_type, exc, tb = type(raised), raised, raised.__traceback__
        try:
            self._atomic.__exit__(exc_type, exc, tb)  # commits, or rolls back the rows
        except BaseException:
            self._remove_files()
            raise
        if exc_type is not None:
            self._remove_files()
        if raised is not None:
            raise raised

    def add(self, **kwargs: Any) -> DatasetImage:
        """``dataset_image_create(**kwargs)``, its file removed again if the import does not commit."""
        image = dataset_image_create(**kwargs)
        self.stored.append(image.image.name)
        return image

    def build(self, **kwargs: Any) -> DatasetImage:
        """``dataset_image_build(**kwargs)``: checked and stored (or being stored), its row left to the caller's
        ``bulk_create``; the file is removed again if the import does not commit."""
        store = self.uploads.store if self.uploads is not None else store_bytes
        image = dataset_image_build(store=store, **kwargs)
        self.stored.append(image.image.name)
        return image

    def discard(self, image: DatasetImage) -> None:
        """Remove the file of a built image that will not be saved after all (a duplicate, say)."""
        if self.uploads is not None:
            self.uploads.wait(image.image.name)
        DatasetImage._meta.get_field("image").storage.delete(image.image.name)
        self.stored.remove(image.image.name)

    def _remove_files(self) -> None:
        storage = DatasetImage._meta.get_field("image").storage
        for name in self.stored:
            storage.delete(name)


class Uploads:
    """Files stored by ``threads`` threads of their own, at most three per thread waiting (their bytes held): a
    caller that gets ahead waits for room. The first failure is raised by the next ``store`` and by ``finish``."""

    def __init__(self, threads: int):
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="upload")
        self.room = threading.BoundedSemaphore(3 * threads)
        self.pending: dict[str, Future] = {}
        self.failed: BaseException | None = None

    def store(self, data: bytes, name: str) -> None:
        if self.failed is not None:
            raise self.failed
        self.room.acquire()
        try:
            future = self.pool.submit(store_bytes, data, name)
        except BaseException:
            self.room.release()
            raise
        self.pending[name] = future
        future.add_done_callback(self._done)

    def _done(self, future: Future) -> None:
        self.room.release()
        if not future.cancelled() and future.exception() is not None and self.failed is None:
            self.failed = future.exception()

    def wait(self, name: str) -> None:
        """Until the upload of ``name`` ended; its failure raised."""
        future = self.pending.pop(name, None)
        if future is not None:
            future.result()

    def finish(self, *, cancel: bool) -> BaseException | None:
        """Every upload ended (the ones not started dropped when ``cancel``), the threads gone; the first failure."""
        if cancel:
            for future in self.pending.values():
                future.cancel()
        wait_for_all(list(self.pending.values()))
        self.pool.shutdown(wait=True)
        return self.failed


@dataclass
class ImportReport:
    dataset: Dataset | None = None
    images: int = 0
    annotations: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    classes_added: list[str] = field(default_factory=list)
    georeferenced: list[tuple[str, str]] = field(default_factory=list)  # (item, what its file told)
    stats: dict = field(default_factory=dict)  # e.g. the tiling's counts

    def note_georeference(self, item: str, image) -> None:
        geo = getattr(image, "georeference", None)
        if geo is not None and (geo.found or geo.problems):
            self.georeferenced.append((item, "; ".join([*geo.found, *geo.problems])))

    def reject(self, item: str, reason: str) -> None:
        self.rejected.append((item, reason))


def import_classes(*, dataset_name, dataset, class_names, add_classes, created_by, report) -> list[DatasetClass]:
    """The dataset an import goes into (created with ``class_names`` in order, or ``dataset``, whose classes are
    matched by name, case and spaces aside; the ones it lacks are added only with ``add_classes``), and its class
    for each of ``class_names``. Sets ``report.dataset`` (and ``report.classes_added``)."""
    if dataset is None:
        dataset = dataset_create(name=dataset_name, class_names=class_names, created_by=created_by)
        classes = list(dataset.classes.order_by("position"))
    else:
        require(created_by, "datasets.change_dataset", dataset, message=f"You may not change dataset {dataset.name!r}.")
        have = {c.name.strip().casefold(): c for c in dataset.classes.all()}
        missing = [n for n in class_names if not isinstance(n, str) or n.strip().casefold() not in have]
        if missing and not add_classes:
            raise ApplicationError(
                f"Dataset {dataset.name!r} has no class {', '.join(map(repr, missing))} "
                f"(it has {', '.join(map(repr, dataset.class_names()))}); ask for new classes to be added.",
                {"classes": [str(m) for m in missing]},
            )
        if missing:
            for added in dataset_classes_add(dataset=dataset, names=missing, user=created_by):
                have[added.name.strip().casefold()] = added
            report.classes_added = list(missing)
        classes = [have[n.strip().casefold()] for n in class_names]
    report.dataset = dataset
    return classes


def import_threads() -> int:
    """Threads that decode, hash and store images while the import's own thread reads files and writes rows."""
    return max(1, settings.DUMPSITE_IMPORT_THREADS)


class InOrder:
    """Work handed to a few threads, its results taken back in the order it was handed in, at most ``depth``
    pieces in flight (so memory stays flat): ``submit`` and ``drain`` yield (tag, result, refusal) where refusal
    is the ApplicationError the work raised; any other exception propagates."""

    def __init__(self, pool: ThreadPoolExecutor, depth: int):
        self.pool, self.depth = pool, depth
        self.queue: deque = deque()

    def submit(self, tag, fn, **kwargs) -> Iterator:
        self.queue.append((tag, self.pool.submit(fn, **kwargs)))
        while len(self.queue) > self.depth:
            yield self._next()

    def drain(self) -> Iterator:
        while self.queue:
            yield self._next()

    def _next(self):
        tag, future = self.queue.popleft()
        try:
            return tag, future.result(), None
        except ApplicationError as exc:
            return tag, None, exc


def flush_images(pending: list, report: ImportReport) -> None:
    """One INSERT of the batch's images, one of their boxes."""
    if not pending:
        return
    with transaction.atomic():
        DatasetImage.objects.bulk_create([image for image, _ in pending])
        boxes = [box for _, built in pending for box in built]
        for box in boxes:
            box.image_id = box.image.pk
        annotations_bulk_create(boxes)
    report.images += len(pending)
    report.annotations += len(boxes)
    pending.clear()
