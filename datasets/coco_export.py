"""Export a dataset to COCO detection files for one training run.

Only enabled images and enabled boxes are written. Category ids are 1..N in the dataset's class order. The split
into train and val is reproducible from the seed: images are shuffled by ``random.Random(seed)`` in id order,
images with boxes and images without boxes (negatives) separately, so each split keeps both kinds. ``file_name``
is the image's path relative to MEDIA_ROOT: images are read in place, not copied.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from dumpsite.errors import ApplicationError

from .models import Annotation, Dataset, DatasetImage


@dataclass(frozen=True)
class CocoExport:
    directory: Path
    train_file: Path
    val_file: Path
    image_root: Path
    classes: list[str]
    train_images: int
    val_images: int
    train_annotations: int
    val_annotations: int

    def as_dict(self) -> dict:
        return {
            "directory": str(self.directory),
            "train_file": str(self.train_file),
            "val_file": str(self.val_file),
            "image_root": str(self.image_root),
            "classes": self.classes,
            "train_images": self.train_images,
            "val_images": self.val_images,
            "train_annotations": self.train_annotations,
            "val_annotations": self.val_annotations,
        }


def split_ids(ids: list[int], *, val_fraction: float, seed: int) -> tuple[set[int], set[int]]:
    """Split ``ids`` into (train, val); the same ids, fraction and seed always give the same split."""
    ordered = sorted(ids)
    random.Random(seed).shuffle(ordered)
    n_val = round(len(ordered) * val_fraction)
    if len(ordered) >= 2:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    else:
        n_val = 0
    return set(ordered[n_val:]), set(ordered[:n_val])


def build_coco(dataset: Dataset, *, val_fraction: float, seed: int, check_files: bool = True) -> tuple[dict, dict]:
    """Return the (train, val) COCO dicts of the dataset's usable content."""
    classes = dataset.class_names()
    class_ids = dict(dataset.classes.values_list("id", "position"))
    categories = [{"id": i + 1, "name": name, "supercategory": "waste"} for i, name in enumerate(classes)]

    images = list(
        DatasetImage.objects.filter(dataset=dataset, enabled=True)
        .order_by("id")
        .values_list("id", "image", "width", "height")
    )
    boxes: dict[int, list[tuple]] = {}
    for row in (
        Annotation.objects.filter(image__dataset=dataset, image__enabled=True, enabled=True)
        .order_by("image_id", "id")
        .values_list("image_id", "dataset_class_id", "x", "y", "width", "height", "polygon")
        .iterator(chunk_size=20000)
    ):
        boxes.setdefault(row[0], []).append(row[1:])

    if check_files:
        root = Path(settings.MEDIA_ROOT)
        missing = [name for _, name, _, _ in images if not (root / name).is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ApplicationError(
                f"{len(missing)} image file(s) of dataset {dataset.name!r} are missing: {shown}.",
                {"missing_files": len(missing)},
            )

    with_boxes = [i for i, *_ in images if i in boxes]
    without = [i for i, *_ in images if i not in boxes]
    train_a, val_a = split_ids(with_boxes, val_fraction=val_fraction, seed=seed)
    train_b, val_b = split_ids(without, val_fraction=val_fraction, seed=seed)
    train_ids, val_ids = train_a | train_b, val_a | val_b

    def document(selected: set[int]) -> dict:
        doc_images, doc_annotations = [], []
        for image_id, name, width, height in images:
            if image_id not in selected:
                continue
            doc_images.append({"id": image_id, "file_name": name, "width": width, "height": height})
            for class_id, x, y, w, h, polygon in boxes.get(image_id, ()):
                doc_annotations.append(
                    {
                        "id": len(doc_annotations) + 1,
                        "image_id": image_id,
                        "category_id": class_ids[class_id] + 1,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                        "segmentation": [[v for point in polygon for v in point]] if polygon else [],
                    }
                )
        return {
            "info": {"description": dataset.name},
            "images": doc_images,
            "annotations": doc_annotations,
            "categories": categories,
        }

    return document(train_ids), document(val_ids)


def export_coco(dataset: Dataset, out_dir: Path, *, val_fraction: float, seed: int) -> CocoExport:
    """Write ``train.json`` and ``val.json`` into ``out_dir`` atomically: a reader sees all of it or none."""
    train, val = build_coco(dataset, val_fraction=val_fraction, seed=seed)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        for name, doc in (("train.json", train), ("val.json", val)):
            with open(tmp / name, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, ensure_ascii=False)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CocoExport(
        directory=out_dir,
        train_file=out_dir / "train.json",
        val_file=out_dir / "val.json",
        image_root=Path(settings.MEDIA_ROOT),
        classes=[c["name"] for c in train["categories"]],
        train_images=len(train["images"]),
        val_images=len(val["images"]),
        train_annotations=len(train["annotations"]),
        val_annotations=len(val["annotations"]),
    )
