"""Import a COCO detection file with its images, from a folder or a checked zip archive, as a new dataset or into
an existing one, with a report of what was imported and every rejected item with its reason.

Images are decoded in full (a truncated file fails here, not in training), stored under their content hash, and
written in batches (one INSERT of images and one of boxes per batch); the whole import is one transaction, and the
files of an import that does not commit are removed again.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from django.conf import settings

from core.errors import ApplicationError

from .import_batch import BATCH, ImageImport, ImportReport, InOrder, flush_images, import_classes, import_threads
from .models import Dataset, DatasetImage
from .services import annotation_build
from .zips import ZipContents, check_coco_size


def _load_coco(json_path: Path) -> dict:
    try:
        with open(json_path, "rb") as fh:
            return parse_coco(fh, str(json_path), size=os.fstat(fh.fileno()).st_size)
    except FileNotFoundError as exc:
        raise ApplicationError(f"COCO file not found: {json_path}.") from exc


def parse_coco(stream, label: str, *, size: int) -> dict:
    """The COCO document in ``stream`` (bytes, ``size`` of them: a zip member's declared size is all zipfile
    reads), checked to be a detection file of at most the size limit; ``label`` names it in errors."""
    check_coco_size(size, label)
    try:
        doc = json.load(io.TextIOWrapper(stream, encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApplicationError(f"{label} is not valid JSON: {exc}.", {"coco_file": "not JSON"}) from exc
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "categories")):
        raise ApplicationError(
            f"{label} is not a COCO detection file (needs 'images' and 'categories' lists).",
            {"coco_file": "not COCO"},
        )
    if not isinstance(doc.setdefault("annotations", []), list):
        raise ApplicationError(f"{label}: 'annotations' is not a list.", {"coco_file": "not COCO"})
    return doc


def _key(value):
    """An id as a dict key that tells 1 from "1" and from True (JSON keeps them apart; Python's == does not)."""
    return (
        (type(value).__name__, value)
        if isinstance(value, (int, float, str, bool)) or value is None
        else ("other", repr(value))
    )


def _duplicate_ids(entries: list) -> dict:
    """Image ids used by more than one entry, with how many entries use each."""
    counts: dict = {}
    for entry in entries:
        if isinstance(entry, dict) and entry.get("id") is not None:
            counts[_key(entry["id"])] = counts.get(_key(entry["id"]), 0) + 1
    return {key: n for key, n in counts.items() if n > 1}


def _categories(entries: list) -> list[dict]:
    """The categories in id order. Each needs an integer id of its own: with two categories of one id, every box
    of that id would land in an arbitrary one of them, so such a file is refused whole."""
    categories: list[dict] = []
    seen: dict[int, object] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ApplicationError(f"categories[{index}] is not an object.", {f"categories[{index}]": "not an object"})
        cid = entry.get("id")
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise ApplicationError(
                f"categories[{index}] has no integer id ({cid!r}).", {f"categories[{index}]": "id must be an integer"}
            )
        if cid in seen:
            raise ApplicationError(
                f"Category id {cid} is used twice ({seen[cid]!r} and {entry.get('name')!r}); each category needs "
                f"its own id.",
                {f"categories[{index}]": f"duplicate id {cid}"},
            )
        seen[cid] = entry.get("name")
        categories.append(entry)
    return sorted(categories, key=lambda c: c["id"])


class FolderImages:
    """Image files named relative to a folder; names that escape it (``../``, absolute paths, links) are refused."""

    def __init__(self, images_dir: Path):
        self.root = Path(images_dir).resolve()
        if not self.root.is_dir():
            raise ApplicationError(f"Image folder not found: {self.root}.")

    def read(self, file_name) -> bytes:
        if not isinstance(file_name, str) or not file_name or "\x00" in file_name:
            raise LookupError("file name is missing or points outside the image folder")
        candidate = (self.root / file_name).resolve()
        if not candidate.is_relative_to(self.root):
            raise LookupError("file name is missing or points outside the image folder")
        if not candidate.is_file():
            raise LookupError("file not found")
        if candidate.stat().st_size > settings.DUMPSITE_MAX_IMAGE_BYTES:
            raise LookupError(f"larger than {settings.DUMPSITE_MAX_IMAGE_BYTES:,} bytes (DUMPSITE_MAX_IMAGE_BYTES)")
        return candidate.read_bytes()


class ZipImages:
    """Image members of a checked archive (``zips.check_zip``), read straight from it: nothing is extracted, and a
    ``file_name`` can only ever name a member. It is looked up relative to the layout's folder, then in its
    ``images/`` folder (CVAT names files relative to ``images/``; Label Studio and plain COCO include it), then in
    ``images/<subset>/`` (CVAT 2 and datumaro keep the pictures of ``instances_<subset>.json`` there)."""

    def __init__(self, archive: zipfile.ZipFile, contents: ZipContents):
        self.archive, self.root = archive, contents.root
        self.members = set(contents.files)
        subset = re.fullmatch(r"instances_([^/]+)\.json", PurePosixPath(contents.coco_file).name)
        self.folders = ["", "images/"] + ([f"images/{subset.group(1)}/"] if subset else [])

    def read(self, file_name) -> bytes:
        if not isinstance(file_name, str) or not file_name or "\x00" in file_name:
            raise LookupError("file name is missing")
        name = file_name.replace("\\", "/")
        while name.startswith("./"):
            name = name[2:]
        tried = [self.root + folder + name for folder in self.folders]
        member = next((m for m in tried if m in self.members), None)
        if member is None:
            raise LookupError(f"not in the archive (looked for {' and '.join(dict.fromkeys(tried))})")
        if self.archive.getinfo(member).file_size > settings.DUMPSITE_MAX_IMAGE_BYTES:
            raise LookupError(f"larger than {settings.DUMPSITE_MAX_IMAGE_BYTES:,} bytes (DUMPSITE_MAX_IMAGE_BYTES)")
        try:
            return self.archive.read(member)  # zipfile checks the CRC: a damaged member fails here
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise LookupError(f"damaged in the archive ({exc})") from None


def import_coco(*, json_path: Path, images_dir: Path, **target) -> ImportReport:
    """A COCO file and its image folder; ``target``: as :func:`import_document` takes it (a new dataset's name or
    an existing dataset, add_classes, created_by, progress)."""
    return import_document(_load_coco(Path(json_path)), FolderImages(images_dir), **target)


def import_coco_zip(*, archive_path: Path, contents: ZipContents, **target) -> ImportReport:
    """A checked COCO zip (``zips.check_zip`` gave ``contents``), read member by member without extracting;
    ``target`` as for :func:`import_coco`."""
    with zipfile.ZipFile(archive_path) as archive:
        with archive.open(contents.coco_file) as stream:
            doc = parse_coco(stream, contents.coco_file, size=archive.getinfo(contents.coco_file).file_size)
        return import_document(doc, ZipImages(archive, contents), **target)


def _target(*, dataset_name, dataset, categories, add_classes, created_by, report) -> dict:
    """The class of each COCO category id."""
    classes = import_classes(
        dataset_name=dataset_name,
        dataset=dataset,
        class_names=[c.get("name") for c in categories],
        add_classes=add_classes,
        created_by=created_by,
        report=report,
    )
    return {c["id"]: cls for c, cls in zip(categories, classes, strict=True)}


def import_document(
    doc: dict,
    source,
    *,
    dataset_name: str | None = None,
    dataset: Dataset | None = None,
    add_classes: bool = False,
    created_by=None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import a parsed COCO document whose images ``source.read(file_name)`` gives (LookupError: why not)."""
    if (dataset is None) == (dataset_name is None):
        raise ApplicationError("Import into a new dataset (a name) or an existing one, not both.", {"dataset": "one"})
    categories = _categories(doc["categories"])
    report = ImportReport()
    with (
        ImageImport(upload_threads=import_threads()) as batch,
        ThreadPoolExecutor(import_threads(), thread_name_prefix="import") as pool,
    ):
        classes = _target(
            dataset_name=dataset_name,
            dataset=dataset,
            categories=categories,
            add_classes=add_classes,
            created_by=created_by,
            report=report,
        )
        dataset = report.dataset
        known = dict(DatasetImage.objects.filter(dataset=dataset).values_list("sha256", "original_name"))
        ambiguous = _duplicate_ids(doc["images"])
        boxes_by_image = _boxes_by_image(doc["annotations"], ambiguous, report)
        settle = _Settle(batch, known=known, boxes_by_image=boxes_by_image, classes=classes, report=report)
        line = InOrder(pool, depth=2 * import_threads())

        total = len(doc["images"])
        for n, entry in enumerate(doc["images"], start=1):
            read = _entry_content(entry, ambiguous, source, report)
            if read is not None:
                label, content = read
                name = PurePosixPath(str(entry.get("file_name"))).name
                settle(line.submit((entry, label), batch.build, dataset=dataset, content=content, original_name=name))
            if progress:
                progress(n, total)
        settle(line.drain())
        flush_images(settle.pending, report)
        for anns in boxes_by_image.values():
            for ann in anns:
                report.reject(f"annotation {ann.get('id')!r}", f"image_id {ann.get('image_id')!r} was not imported")
        if report.images == 0 and dataset_name is not None:  # no empty new dataset; an existing one may gain nothing
            raise ApplicationError("No image could be imported; nothing was saved.", {"rejected": len(report.rejected)})
    return report


def _entry_content(entry, ambiguous: dict, source, report: ImportReport) -> tuple[str, bytes] | None:
    """An image entry's label and file content, or None when it is refused (the reason is in the report)."""
    label = f"image {entry.get('id')!r} ({entry.get('file_name')!r})" if isinstance(entry, dict) else "image"
    if not isinstance(entry, dict):
        report.reject(label, "not an object")
        return None
    if _key(entry.get("id")) in ambiguous:
        report.reject(
            label,
            f"image id {entry.get('id')!r} is used by {ambiguous[_key(entry.get('id'))]} images; "
            "none of them is imported",
        )
        return None
    try:
        return label, source.read(entry.get("file_name"))  # here: archives and folders read in order
    except LookupError as exc:
        report.reject(label, str(exc.args[0]))
        return None


class _Settle:
    """What becomes of each decoded image, in document order: refused, a duplicate of one already there, or kept
    with its boxes (written in batches)."""

    def __init__(self, batch: ImageImport, *, known: dict, boxes_by_image: dict, classes: dict, report: ImportReport):
        self.batch, self.known, self.boxes_by_image = batch, known, boxes_by_image
        self.classes, self.report = classes, report
        self.pending: list[tuple[DatasetImage, list]] = []

    def __call__(self, done) -> None:
        report, known = self.report, self.known
        for (entry, label), image, refusal in done:
            if refusal is not None:
                report.reject(label, refusal.message)
            elif image.sha256 in known:
                self.batch.discard(image)
                report.reject(
                    label, f"the same image is already in the dataset ({known[image.sha256] or image.sha256[:12]})"
                )
            else:
                known[image.sha256] = image.original_name
                report.note_georeference(label, image)
                boxes = self.boxes_by_image.pop(_key(entry.get("id")), [])
                self.pending.append((image, _boxes(image, boxes, label, self.classes, report)))
                if len(self.pending) >= BATCH:
                    flush_images(self.pending, report)


def _boxes_by_image(annotations: list, ambiguous: dict, report: ImportReport) -> dict:
    boxes_by_image: dict = {}
    annotation_ids: set = set()
    for ann in annotations:
        if not isinstance(ann, dict):
            report.reject("annotation", "not an object")
        elif ann.get("id") is not None and _key(ann.get("id")) in annotation_ids:
            report.reject(f"annotation {ann.get('id')!r}", "duplicate annotation id (the first one is kept)")
        elif _key(ann.get("image_id")) in ambiguous:
            report.reject(
                f"annotation {ann.get('id')!r}",
                f"image_id {ann.get('image_id')!r} is shared by several images; which one the box belongs to is "
                f"unknown",
            )
        else:
            annotation_ids.add(_key(ann.get("id")))
            boxes_by_image.setdefault(_key(ann.get("image_id")), []).append(ann)
    return boxes_by_image


def _boxes(image, anns, label, classes, report) -> list:
    built = []
    for ann in anns:
        ann_label = f"annotation {ann.get('id')!r} of {label}"
        category = ann.get("category_id")
        cls = None if isinstance(category, bool) else classes.get(category)
        bbox = ann.get("bbox")
        if cls is None:
            report.reject(ann_label, f"unknown category_id {ann.get('category_id')!r}")
            continue
        if not isinstance(bbox, list) or len(bbox) != 4:
            report.reject(ann_label, "bbox is not [x, y, width, height]")
            continue
        seg = ann.get("segmentation")
        polygon = None
        if isinstance(seg, list) and seg and isinstance(seg[0], list) and len(seg[0]) >= 6:
            polygon = [seg[0][i : i + 2] for i in range(0, len(seg[0]) - 1, 2)]
        try:
            built.append(
                annotation_build(
                    image=image,
                    dataset_class=cls,
                    x=bbox[0],
                    y=bbox[1],
                    width=bbox[2],
                    height=bbox[3],
                    polygon=polygon,
                )
            )
        except ApplicationError as exc:
            report.reject(ann_label, str(exc))
    return built
