"""Export a dataset to COCO detection files for one training run.

Only enabled images and enabled boxes are written. Category ids are 1..N in the dataset's class order. The split
into train and val follows the run's strategy (``splits.py``: random, spatial blocks or capture time), reproducible
from the seed. The documents name each image by its stored name; the files written for a run's child name its local
copy instead (``localized``): read in place in the local folder, fetched into the worker host's cache from a bucket.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ApplicationError
from core.host_cache import LocalFiles, local_files
from core.storage import missing_files

from .models import Annotation, Dataset, DatasetImage
from .splits import DEFAULT_CELL_M, split_dataset


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
    split: dict
    # The training split's ground resolution (``ground_resolution_of``); empty when no image has a footprint.
    ground_resolution: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)  # the host cache's hits, misses and bytes fetched (from a bucket)
    # What was written, kept so that the worker reads neither file back: what went to each side, and the
    # validation document (the ground truth its evaluation is stored with).
    manifest: dict = field(default_factory=dict, repr=False)
    validation: dict = field(default_factory=dict, repr=False)

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
            "split": self.split,
            **({"ground_resolution": self.ground_resolution} if self.ground_resolution else {}),
            **({"cache": self.cache} if self.cache else {}),
        }


def build_coco(
    dataset: Dataset,
    *,
    val_fraction: float,
    seed: int,
    strategy: str = "random",
    cell_size_m: float = DEFAULT_CELL_M,
    check_files: bool = True,
) -> tuple[dict, dict]:
    """Return the (train, val) COCO dicts of the dataset's usable content, split by ``strategy``
    (``splits.split_dataset``). Annotation ids are the boxes' ids, and each image carries its ``sha256``: the two
    documents are the run's manifest (``manifest_of``). ``info.split`` says how the split was made."""
    classes = dataset.class_names()
    class_ids = dict(dataset.classes.values_list("id", "position"))
    categories = [{"id": i + 1, "name": name, "supercategory": "waste"} for i, name in enumerate(classes)]

    images = list(
        DatasetImage.objects.filter(dataset=dataset, enabled=True)
        .order_by("id")
        .values_list("id", "image", "width", "height", "sha256", "gsd_m")
    )
    boxes: dict[int, list[tuple]] = {}
    for row in (
        Annotation.objects.filter(image__dataset=dataset, image__enabled=True, enabled=True)
        .order_by("image_id", "id")
        .values_list("image_id", "id", "dataset_class_id", "x", "y", "width", "height", "polygon")
        .iterator(chunk_size=20000)
    ):
        boxes.setdefault(row[0], []).append(row[1:])

    if check_files:
        missing = missing_files([name for _, name, *_ in images])
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ApplicationError(
                f"{len(missing)} image file(s) of dataset {dataset.name!r} are missing: {shown}.",
                {"missing_files": len(missing)},
            )

    split = split_dataset(
        dataset,
        images=[i for i, *_ in images],
        with_boxes=set(boxes),
        strategy=strategy,
        val_fraction=val_fraction,
        seed=seed,
        cell_size_m=cell_size_m,
    )

    def document(selected: set[int]) -> dict:
        doc_images, doc_annotations = [], []
        for image_id, name, width, height, sha256, gsd in images:
            if image_id not in selected:
                continue
            entry = {"id": image_id, "file_name": name, "width": width, "height": height, "sha256": sha256}
            if gsd is not None:  # metres per pixel, from the footprint: what target_gsd resamples from
                entry["gsd"] = round(gsd, 6)
            doc_images.append(entry)
            for box_id, class_id, x, y, w, h, polygon in boxes.get(image_id, ()):
                doc_annotations.append(
                    {
                        "id": box_id,
                        "image_id": image_id,
                        "category_id": class_ids[class_id] + 1,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                        "segmentation": [[v for point in polygon for v in point]] if polygon else [],
                    }
                )
        return {
            "info": {"description": dataset.name, "split": split.summary()},
            "images": doc_images,
            "annotations": doc_annotations,
            "categories": categories,
        }

    return document(split.train), document(split.val)


def content_hash(doc: dict) -> str:
    """SHA-256 of what a COCO document trains or validates on: each image's id and content hash, each box's id,
    class name and coordinates. Two runs with equal hashes used the same data."""
    names = {c["id"]: c["name"] for c in doc["categories"]}
    boxes: dict[int, list] = {}
    for a in doc["annotations"]:
        boxes.setdefault(a["image_id"], []).append([a["id"], names[a["category_id"]], *a["bbox"]])
    canonical = [
        [i["id"], i.get("sha256", ""), i["width"], i["height"], sorted(boxes.get(i["id"], []))]
        for i in sorted(doc["images"], key=lambda i: i["id"])
    ]
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


def manifest_of(train: dict, val: dict) -> dict:
    """What went to each side: image ids, box ids and a content hash, plus the split's description."""

    def side(doc: dict) -> dict:
        return {
            "image_ids": sorted(i["id"] for i in doc["images"]),
            "box_ids": sorted(a["id"] for a in doc["annotations"]),
            "content_hash": content_hash(doc),
        }

    return {"split": train["info"].get("split", {}), "train": side(train), "val": side(val)}


def export_coco(
    dataset: Dataset,
    out_dir: Path,
    *,
    val_fraction: float,
    seed: int,
    strategy: str = "random",
    cell_size_m: float = DEFAULT_CELL_M,
) -> CocoExport:
    """Write ``train.json`` and ``val.json`` into ``out_dir`` atomically: a reader sees all of it or none."""
    train, val = build_coco(dataset, val_fraction=val_fraction, seed=seed, strategy=strategy, cell_size_m=cell_size_m)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    local = local_files([(i["file_name"], i["sha256"]) for i in train["images"] + val["images"]])
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        for name, doc in (("train.json", train), ("val.json", val)):
            with open(tmp / name, "w", encoding="utf-8") as fh:
                json.dump(localized(doc, local), fh, ensure_ascii=False)
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
        image_root=local.root,
        cache=local.counts,
        classes=[c["name"] for c in train["categories"]],
        train_images=len(train["images"]),
        val_images=len(val["images"]),
        train_annotations=len(train["annotations"]),
        val_annotations=len(val["annotations"]),
        split=train["info"]["split"],
        ground_resolution=ground_resolution_of(train),
        manifest=manifest_of(train, val),
        validation=val,
    )


def ground_resolution_of(doc: dict) -> dict:
    """The ground sample distance of a document's images that have one (metres per pixel: smallest, median,
    largest), and the median ground length of their longest side (metres): what a model trained on them saw."""
    gsds = sorted(i["gsd"] for i in doc["images"] if i.get("gsd"))
    if not gsds:
        return {}
    sides = sorted(i["gsd"] * max(i["width"], i["height"]) for i in doc["images"] if i.get("gsd"))
    return {
        "images": len(gsds),
        "min_m": gsds[0],
        "median_m": round(statistics.median(gsds), 6),
        "max_m": gsds[-1],
        "longest_side_median_m": round(statistics.median(sides), 3),
    }


def localized(doc: dict, local: LocalFiles) -> dict:
    """The document as the worker's child reads it: each image's ``file_name`` relative to ``local.root`` (in place
    in the local folder, the host's cache copy from a bucket)."""
    return {**doc, "images": [{**i, "file_name": local.relative[i["file_name"]]} for i in doc["images"]]}


def remap_classes(doc: dict, classes: list[str]) -> tuple[dict, dict]:
    """The document with categories 1..N in ``classes``' order (a model's), boxes of other classes left out.
    Returns it with what was left out: ``{"boxes": n, "classes": [names]}``."""
    new_id = {name: i + 1 for i, name in enumerate(classes)}
    old_name = {c["id"]: c["name"] for c in doc["categories"]}
    kept, dropped, dropped_names = [], 0, set()
    for a in doc["annotations"]:
        name = old_name[a["category_id"]]
        if name in new_id:
            kept.append({**a, "category_id": new_id[name]})
        else:
            dropped += 1
            dropped_names.add(name)
    out = {
        **doc,
        "annotations": kept,
        "categories": [{"id": i + 1, "name": name, "supercategory": "waste"} for i, name in enumerate(classes)],
    }
    return out, {"boxes": dropped, "classes": sorted(dropped_names)}


def merge_documents(first: dict, second: dict) -> dict:
    """One document of two with the same categories (a split's two sides back together)."""
    images = sorted(first["images"] + second["images"], key=lambda i: i["id"])
    annotations = sorted(first["annotations"] + second["annotations"], key=lambda a: (a["image_id"], a["id"]))
    return {**first, "images": images, "annotations": annotations}
