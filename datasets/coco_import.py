"""Import a COCO detection file and its image folder as a new dataset, with a report of what was rejected."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dumpsite.errors import ApplicationError

from .models import Dataset
from .services import (
    ImageImport,
    annotation_build,
    annotations_bulk_create,
    dataset_create,
)


@dataclass
class ImportReport:
    dataset: Dataset | None = None
    images: int = 0
    annotations: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)

    def reject(self, item: str, reason: str) -> None:
        self.rejected.append((item, reason))


def _load_coco(json_path: Path) -> dict:
    try:
        with open(json_path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError as exc:
        raise ApplicationError(f"COCO file not found: {json_path}.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApplicationError(f"{json_path} is not valid JSON: {exc}.") from exc
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "categories")):
        raise ApplicationError(f"{json_path} is not a COCO detection file (needs 'images' and 'categories' lists).")
    doc.setdefault("annotations", [])
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
    categories, seen = [], {}
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


def _confined(images_dir: Path, file_name) -> Path | None:
    """The image path inside ``images_dir``, or None when the name escapes it (``../``, absolute paths, links)."""
    if not isinstance(file_name, str) or not file_name or "\x00" in file_name:
        return None
    candidate = (images_dir / file_name).resolve()
    return candidate if candidate.is_relative_to(images_dir) else None


def import_coco(
    *,
    json_path: Path,
    images_dir: Path,
    dataset_name: str,
    created_by=None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    doc = _load_coco(Path(json_path))
    images_dir = Path(images_dir).resolve()
    if not images_dir.is_dir():
        raise ApplicationError(f"Image folder not found: {images_dir}.")
    categories = _categories(doc["categories"])
    category_names = [c.get("name") for c in categories]

    report = ImportReport()
    with ImageImport() as batch:
        dataset = dataset_create(name=dataset_name, class_names=category_names, created_by=created_by)
        report.dataset = dataset
        classes = {c["id"]: cls for c, cls in zip(categories, dataset.classes.order_by("position"), strict=True)}
        ambiguous = _duplicate_ids(doc["images"])
        boxes_by_image: dict = {}
        annotation_ids: set = set()
        for ann in doc["annotations"]:
            if not isinstance(ann, dict):
                report.reject("annotation", "not an object")
            elif ann.get("id") is not None and _key(ann.get("id")) in annotation_ids:
                report.reject(f"annotation {ann.get('id')!r}", "duplicate annotation id (the first one is kept)")
            elif _key(ann.get("image_id")) in ambiguous:
                report.reject(
                    f"annotation {ann.get('id')!r}",
                    f"image_id {ann.get('image_id')!r} is shared by several images; which one the box "
                    f"belongs to is unknown",
                )
            else:
                annotation_ids.add(_key(ann.get("id")))
                boxes_by_image.setdefault(_key(ann.get("image_id")), []).append(ann)

        total = len(doc["images"])
        for n, entry in enumerate(doc["images"], start=1):
            if progress:
                progress(n, total)
            label = f"image {entry.get('id')!r} ({entry.get('file_name')!r})" if isinstance(entry, dict) else "image"
            if isinstance(entry, dict) and _key(entry.get("id")) in ambiguous:
                report.reject(
                    label,
                    f"image id {entry.get('id')!r} is used by {ambiguous[_key(entry.get('id'))]} "
                    f"images; none of them is imported",
                )
                continue
            path = _confined(images_dir, entry.get("file_name")) if isinstance(entry, dict) else None
            if path is None:
                report.reject(label, "file name is missing or points outside the image folder")
                continue
            if not path.is_file():
                report.reject(label, "file not found")
                continue
            try:
                image = batch.add(dataset=dataset, content=path.read_bytes(), original_name=path.name)
            except ApplicationError as exc:
                report.reject(label, exc.message)
                continue
            report.images += 1
            built = []
            for ann in boxes_by_image.pop(_key(entry.get("id")), []):
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
            annotations_bulk_create(built)
            report.annotations += len(built)
        for anns in boxes_by_image.values():
            for ann in anns:
                report.reject(f"annotation {ann.get('id')!r}", f"image_id {ann.get('image_id')!r} was not imported")
        if report.images == 0:
            raise ApplicationError("No image could be imported; nothing was saved.", {"rejected": len(report.rejected)})
    return report
