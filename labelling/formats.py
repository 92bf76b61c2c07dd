"""Pre-annotations in the files the labelling tools import: a CVAT task archive as COCO 1.0 or as CVAT for images
1.1, and Label Studio tasks with ``predictions``: a list of images with their boxes in, zip files out.

An image is ``{"name", "width", "height", "boxes": [[class, score, x, y, w, h], ...]}`` with the box in pixels
(top-left corner, width, height); its picture is the file ``images/<name>`` of the folder handed to the writers.
Every piece of user text (class names, the model's name) goes through ``json`` or ElementTree, never into markup
by hand. Each archive is written beside its target and moved into place (``write_atomically``).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO
from xml.etree import ElementTree as ET

from core.file_cache import write_atomically

# Label Studio's names for the two tags of a rectangle project; the labelling config below uses them.
LS_FROM, LS_TO = "label", "image"
FORMATS = ("cvat_coco", "cvat_xml", "label_studio")


def archive_name(fmt: str) -> str:
    """The file name of a task's archive in ``fmt``: ``cvat-coco.zip``, ``cvat-xml.zip``, ``label-studio.zip``."""
    return f"{fmt.replace('_', '-')}.zip"


def coco_document(images: Sequence[dict], classes: Sequence[str]) -> dict:
    """COCO as CVAT's "COCO 1.0" holds it: category ids 1..N in class order, one image per file name, each box
    with its model's ``score`` and CVAT's ``attributes``."""
    ids = {name: i for i, name in enumerate(classes, start=1)}
    document: dict = {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"description": "Pre-annotations", "version": "1.0", "contributor": "", "url": "", "year": ""},
        "categories": [{"id": i, "name": name, "supercategory": ""} for name, i in ids.items()],
        "images": [],
        "annotations": [],
    }
    for index, image in enumerate(images, start=1):
        document["images"].append(
            {"id": index, "width": image["width"], "height": image["height"], "file_name": image["name"]}
        )
        for cls, score, x, y, w, h in image["boxes"]:
            document["annotations"].append(
                {
                    "id": len(document["annotations"]) + 1,
                    "image_id": index,
                    "category_id": ids[cls],
                    "segmentation": [],
                    "area": round(w * h, 2),
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                    "score": score,
                    "attributes": {"occluded": False},
                }
            )
    return document


def cvat_xml(images: Sequence[dict], classes: Sequence[str], *, task_name: str) -> bytes:
    """CVAT for images 1.1 (``annotations.xml``): the task's labels, then one ``<image>`` per file with its
    ``<box>`` shapes marked ``source="auto"`` (CVAT's mark for a shape a model made)."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(meta, "name").text = task_name
    ET.SubElement(meta, "size").text = str(len(images))
    ET.SubElement(meta, "mode").text = "annotation"
    labels = ET.SubElement(meta, "labels")
    for name in classes:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "rectangle"
        ET.SubElement(label, "attributes")
    for index, image in enumerate(images):
        node = ET.SubElement(
            root,
            "image",
            id=str(index),
            name=image["name"],
            width=str(image["width"]),
            height=str(image["height"]),
        )
        for cls, _score, x, y, w, h in image["boxes"]:
            ET.SubElement(
                node,
                "box",
                label=cls,
                source="auto",
                occluded="0",
                xtl=f"{x:.2f}",
                ytl=f"{y:.2f}",
                xbr=f"{x + w:.2f}",
                ybr=f"{y + h:.2f}",
                z_order="0",
            )
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def label_config(classes: Sequence[str]) -> bytes:
    """The Label Studio labelling config of a rectangle project with these classes."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=LS_TO, value=f"${LS_TO}", zoom="true")
    labels = ET.SubElement(view, "RectangleLabels", name=LS_FROM, toName=LS_TO)
    for name in classes:
        ET.SubElement(labels, "Label", value=name)
    return ET.tostring(view, encoding="utf-8")


def percent(value: float, whole: int) -> float:
    return round(100.0 * value / whole, 6)


def label_studio_tasks(images: Sequence[dict], *, model_version: str, image_url: str) -> list[dict]:
    """Label Studio tasks, one per image, each with the model's boxes as one prediction: ``model_version``, the
    mean score of its boxes and per box its own score, in percent of the image as Label Studio keeps them.
    ``image_url`` is prefixed to each file name (where Label Studio finds the pictures)."""
    tasks = []
    for index, image in enumerate(images, start=1):
        width, height = image["width"], image["height"]
        result = []
        for number, (cls, score, x, y, w, h) in enumerate(image["boxes"], start=1):
            result.append(
                {
                    "id": f"t{index}b{number}",
                    "type": "rectanglelabels",
                    "from_name": LS_FROM,
                    "to_name": LS_TO,
                    "original_width": width,
                    "original_height": height,
                    "image_rotation": 0,
                    "score": score,
                    "value": {
                        "x": percent(x, width),
                        "y": percent(y, height),
                        "width": percent(w, width),
                        "height": percent(h, height),
                        "rotation": 0,
                        "rectanglelabels": [cls],
                    },
                }
            )
        scores = [box[1] for box in image["boxes"]]
        tasks.append(
            {
                "id": index,
                "data": {LS_TO: image_url + image["name"], "file_name": image["name"]},
                "predictions": [
                    {
                        "model_version": model_version,
                        "score": round(sum(scores) / len(scores), 4) if scores else 0.0,
                        "result": result,
                    }
                ],
            }
        )
    return tasks


def _archive(target: Path, members: dict[str, bytes], images: Sequence[dict], folder: Path) -> None:
    def write(out: BinaryIO) -> None:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, content in members.items():
                zf.writestr(name, content)
            for image in images:
                # JPEG is compressed already
                zf.write(folder / "images" / image["name"], f"images/{image['name']}", zipfile.ZIP_STORED)

    write_atomically(target, write)


def write_archives(
    folder: Path,
    images: Sequence[dict],
    classes: Sequence[str],
    *,
    task_name: str,
    model_version: str,
    image_url: str,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """The three archives of ``folder`` (whose ``images/`` holds the pictures): ``cvat-coco.zip`` (CVAT's COCO
    1.0 task layout), ``cvat-xml.zip`` (CVAT for images 1.1) and ``label-studio.zip`` (tasks JSON with the
    predictions, the labelling config, the pictures)."""
    written = {}
    for fmt in FORMATS:
        if progress:
            progress(fmt)
        if fmt == "cvat_coco":
            document = json.dumps(coco_document(images, classes), ensure_ascii=False).encode()
            members = {"annotations/instances_default.json": document}
        elif fmt == "cvat_xml":
            members = {"annotations.xml": cvat_xml(images, classes, task_name=task_name)}
        else:
            tasks = label_studio_tasks(images, model_version=model_version, image_url=image_url)
            members = {
                "tasks.json": json.dumps(tasks, ensure_ascii=False, indent=1).encode(),
                "label_config.xml": label_config(classes),
            }
        target = folder / archive_name(fmt)
        _archive(target, members, images, folder)
        written[fmt] = target
    return written
