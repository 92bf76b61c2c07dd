"""COCO zips laid out as annotation tools export them, for the upload tests: CVAT's "COCO 1.0", Label Studio's COCO
export, and a plain annotations.json beside images/. Each holds the same three tiles and boxes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tests.conftest import jpeg_bytes

CLASSES = ["waste", "tyres"]
# (name, (width, height), colour, [(class index, x, y, w, h)])
TILES = [
    ("tile_a.jpg", (64, 48), (200, 40, 40), [(0, 2.5, 3.0, 20.0, 10.25)]),
    ("tile_b.jpg", (80, 60), (40, 200, 40), [(0, 1.0, 1.0, 10.0, 10.0), (1, 30.0, 20.0, 40.0, 30.0)]),
    ("tile_c.jpg", (64, 48), (40, 40, 200), []),
]


def tile_bytes(index: int) -> bytes:
    name, size, colour, _ = TILES[index]
    return jpeg_bytes(*size, colour=colour)


def _doc(file_name, *, first_id: int, category_base: int, extra_image=None, extra_ann=None) -> dict:
    images: list[dict] = []
    annotations: list[dict] = []
    for i, (name, (w, h), _, boxes) in enumerate(TILES):
        images.append(
            {"id": first_id + i, "file_name": file_name(name), "width": w, "height": h, **(extra_image or {})}
        )
        for cls, x, y, bw, bh in boxes:
            annotations.append(
                {
                    "id": len(annotations) + first_id,
                    "image_id": first_id + i,
                    "category_id": category_base + cls,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                    "segmentation": [],
                    **(extra_ann or {}),
                }
            )
    categories = [{"id": category_base + i, "name": n, "supercategory": ""} for i, n in enumerate(CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def cvat(path: Path, top: str = "") -> Path:
    """CVAT "COCO 1.0": annotations/instances_default.json, file names relative to images/, ids from 1."""
    doc = _doc(lambda n: n, first_id=1, category_base=1, extra_image={"license": 0, "flickr_url": "", "coco_url": ""})
    doc.update(licenses=[{"name": "", "id": 0, "url": ""}], info={"contributor": "", "version": ""})
    members: dict[str, str | bytes] = {f"{top}annotations/instances_default.json": json.dumps(doc)}
    members.update({f"{top}images/{name}": tile_bytes(i) for i, (name, *_) in enumerate(TILES)})
    return _write(path, members)


def label_studio(path: Path) -> Path:
    """Label Studio's COCO export: result.json, file names "images/<hash>-<name>", ids (and categories) from 0."""
    doc = _doc(lambda n: f"images/5f3a9c1e-{n}", first_id=0, category_base=0, extra_ann={"ignore": 0})
    doc["info"] = {"year": 2026, "version": "1.0", "description": "", "contributor": "Label Studio"}
    members: dict[str, str | bytes] = {"result.json": json.dumps(doc)}
    members.update({f"images/5f3a9c1e-{name}": tile_bytes(i) for i, (name, *_) in enumerate(TILES)})
    return _write(path, members)


def plain(path: Path, extra: dict | None = None) -> Path:
    """annotations.json beside images/ (file names include images/), as export_coco writes it."""
    members: dict[str, str | bytes] = {
        "annotations.json": json.dumps(_doc(lambda n: f"images/{n}", first_id=1, category_base=1))
    }
    members.update({f"images/{name}": tile_bytes(i) for i, (name, *_) in enumerate(TILES)})
    members.update(extra or {})
    return _write(path, members)


def _write(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


LAYOUTS = {"CVAT (COCO 1.0)": cvat, "Label Studio (COCO)": label_studio, "plain COCO": plain}
