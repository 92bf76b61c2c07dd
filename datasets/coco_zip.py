"""A dataset out as one COCO zip: ``annotations.json`` (category ids 1..N in the dataset's class order, the boxes of
enabled images, each image with its sha256) and ``images/``, streamed chunk by chunk (never the whole archive in
memory). The same importer reads it back (``zips.py`` finds the plain layout)."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from django.http import StreamingHttpResponse

from core.storage import open_stored
from core.zip_stream import CHUNK, ZipPipe

from .coco_export import build_coco, merge_documents
from .models import Dataset

COCO_NAME = "annotations.json"


def export_document(dataset: Dataset, *, image_ids: Iterable[int] | None = None) -> dict:
    """The dataset's enabled images and boxes as one COCO document (or only ``image_ids``, e.g. one side of a
    run's recorded split), with ``file_name`` inside the archive: ``images/<id>_<original name>``."""
    train, val = build_coco(dataset, val_fraction=0.0, seed=0)
    doc = merge_documents(train, val)
    if image_ids is not None:
        wanted = set(image_ids)
        doc["images"] = [i for i in doc["images"] if i["id"] in wanted]
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in wanted]
    doc["info"] = {"description": dataset.name, "exported_from": f"dataset #{dataset.pk}"}
    names = dict(dataset.images.values_list("id", "original_name"))
    for image in doc["images"]:
        stored = image["file_name"]
        original = re.sub(r"[^A-Za-z0-9._-]+", "_", names.get(image["id"]) or Path(stored).name)[-120:]
        image["source"] = stored
        image["file_name"] = f"images/{image['id']}_{original}"
    return doc


def zip_response(doc: dict, filename: str):
    """A streamed HTTP download of the archive (web processes and the API)."""

    response = StreamingHttpResponse(stream_coco_zip(doc), content_type="application/zip")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", filename)[:150] or "dataset.zip"
    response["Content-Disposition"] = f'attachment; filename="{safe}"'
    return response


def stream_coco_zip(doc: dict, on_image=None) -> Iterator[bytes]:
    """The archive of ``doc`` and its image files, as chunks. The JSON is deflated; images (already compressed)
    are stored. ``on_image()`` is called after each image (a progress bar)."""
    pipe = ZipPipe()
    exported = {**doc, "images": [{k: v for k, v in i.items() if k != "source"} for i in doc["images"]]}
    with zipfile.ZipFile(pipe, "w") as archive:
        archive.writestr(COCO_NAME, json.dumps(exported, ensure_ascii=False), compress_type=zipfile.ZIP_DEFLATED)
        yield pipe.take()
        for image in doc["images"]:
            with open_stored(image["source"]) as source, archive.open(image["file_name"], "w") as target:
                while block := source.read(CHUNK):
                    target.write(block)
                    yield pipe.take()
            if on_image is not None:
                on_image()
    yield pipe.take()
