"""COCO zip import of 5,000 tiles (512 px JPEGs, 3 boxes each) against its floor: unzip + sha256 + full decode of
the same files (what the importer's integrity check must do anyway), alternated in one run; and its memory, which
must not grow with the number of images (the images are read one at a time, never held)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

from django.conf import settings
from django.test.utils import override_settings
from PIL import Image

from .common import SCRATCH, Figure, alternate, median

SIZE, TILE, BOXES, REPETITIONS, SMALL = 5_000, 512, 3, 3, 1_000


def build_zip(n: int) -> Path:
    """The archive of ``n`` synthetic aerial tiles (the demo's generator), made once and kept under var/bench."""
    from datasets.demo import DEMO_CLASSES, generate_tile

    path = SCRATCH / f"coco-{n}-{TILE}.zip"
    if path.exists():
        return path
    SCRATCH.mkdir(parents=True, exist_ok=True)
    doc = {"categories": [{"id": i + 1, "name": c} for i, c in enumerate(DEMO_CLASSES)], "images": []}
    doc["annotations"] = []
    partial = path.with_suffix(".part")
    with zipfile.ZipFile(partial, "w") as archive:
        for index in range(n):
            tile = generate_tile(7, index, size=TILE)
            name = f"images/tile_{index:05d}.jpg"
            archive.writestr(name, tile.jpeg)  # stored: JPEGs do not compress
            doc["images"].append({"id": index + 1, "file_name": name, "width": TILE, "height": TILE})
            for cls, x, y, w, h in tile.boxes[:BOXES]:
                doc["annotations"].append(
                    {
                        "id": len(doc["annotations"]) + 1,
                        "image_id": index + 1,
                        "category_id": cls + 1,
                        "bbox": [x, y, w, h],
                    }
                )
        archive.writestr("annotations.json", json.dumps(doc), compress_type=zipfile.ZIP_DEFLATED)
    partial.rename(path)
    return path


def _import(path: Path, name: str):
    from datasets.coco_import import import_coco_zip
    from datasets.zips import ZipLimits, check_zip

    contents = check_zip(path, ZipLimits.from_settings())
    return import_coco_zip(archive_path=path, contents=contents, dataset_name=name)


def _drop(name: str) -> None:
    from datasets.models import Annotation, Dataset

    dataset = Dataset.objects.filter(name=name).first()
    if dataset is not None:
        shutil.rmtree(Path(settings.MEDIA_ROOT) / "datasets" / str(dataset.pk), ignore_errors=True)
        Annotation.objects.filter(image__dataset=dataset).delete()  # boxes protect their classes
        dataset.delete()


def _floor(path: Path) -> None:
    """Unzip every member to disk, then read each image back, hash it and decode all its pixels."""
    out = Path(tempfile.mkdtemp(prefix="bench-unzip-", dir=SCRATCH))
    try:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(out)
        for file in sorted((out / "images").iterdir()):
            data = file.read_bytes()
            hashlib.sha256(data).hexdigest()
            with Image.open(io.BytesIO(data)) as img:
                img.load()
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _peak_mib(path: Path, name: str) -> float:
    tracemalloc.start()
    try:
        _import(path, name)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
        _drop(name)


def run() -> list[Figure]:
    big, small = build_zip(SIZE), build_zip(SMALL)
    times: dict[str, list[float]] = {"import": [], "floor": [], "one thread": []}
    for repetition in range(REPETITIONS):
        names = {"import": f"bench-zip-{repetition}", "one thread": f"bench-zip-1t-{repetition}"}

        def imported(name=names["import"]):
            report = _import(big, name)
            assert report.images == SIZE, report.rejected[:3]

        def one_thread(name=names["one thread"]):
            with override_settings(DUMPSITE_IMPORT_THREADS=1):
                imported(name)

        for name in names.values():
            _drop(name)
        once = alternate({"import": imported, "floor": lambda: _floor(big), "one thread": one_thread}, 1)
        for name in names.values():
            _drop(name)  # not timed
        for key, values in once.items():
            times[key] += values
    ratio = median(times["import"]) / median(times["floor"])
    single = median(times["one thread"]) / median(times["floor"])
    peaks = {SMALL: _peak_mib(small, "bench-zip-mem-small"), SIZE: _peak_mib(big, "bench-zip-mem-big")}
    archive_mib = {n: p.stat().st_size / 2**20 for n, p in ((SMALL, small), (SIZE, big))}
    share = (peaks[SIZE] - peaks[SMALL]) / (archive_mib[SIZE] - archive_mib[SMALL])
    return [
        Figure(
            "zip import",
            f"{SIZE:,} tiles of {TILE} px ({archive_mib[SIZE]:.0f} MiB zip): import / (unzip + sha256 + decode)",
            f"{median(times['import']):.1f} s / {median(times['floor']):.1f} s = {ratio:.2f}x",
            "<= 1.5x",
            ratio <= 1.5,
        ),
        Figure(
            "zip import",
            "the same with one image thread (DUMPSITE_IMPORT_THREADS=1) / the same floor",
            f"{median(times['one thread']):.1f} s / {median(times['floor']):.1f} s = {single:.2f}x",
            f"informative: the default uses {settings.DUMPSITE_IMPORT_THREADS} threads; the floor one",
            None,
        ),
        Figure(
            "zip import",
            f"peak Python memory, {SMALL:,} vs {SIZE:,} tiles",
            f"{peaks[SMALL]:.1f} MiB -> {peaks[SIZE]:.1f} MiB while the archive grows "
            f"{archive_mib[SMALL]:.0f} -> {archive_mib[SIZE]:.0f} MiB ({share:.1%} of the growth)",
            "flat: grows by < 5% of the archive's growth",
            share < 0.05,
        ),
    ]
