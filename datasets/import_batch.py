"""What the importers share (COCO files and zips, orthophoto tilings): the report, the target dataset and its
classes, the threads that decode, hash and store images, and the batched INSERTs."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from access.rules import require
from core.errors import ApplicationError

from .models import Dataset, DatasetClass, DatasetImage
from .services import annotations_bulk_create, dataset_classes_add, dataset_create

BATCH = 200  # images per INSERT


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
