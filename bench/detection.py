"""Detection runs over orthophotos, four figures in one run (`bash bench/run.sh detection`):

- Throughput: a detection run through the platform (API call -> queue -> worker -> child -> rows stored in PostGIS)
  against its floor: a script in a fresh process (as anyone runs MMDetection: start, imports and model load
  included, as the platform's child pays them) reading the same windows with GDAL and running them through
  MMDetection's own ``DetInferencer`` on the same model and batch size. Alternated, medians. A floor measured in
  the warm bench process would leave out costs every run pays once: oneDNN's first kernels, lazy imports.
- Memory: the detection child's own peak resident memory (VmHWM) on a 20,000 x 20,000 px orthophoto against a
  5,000 x 5,000 px one (the tiling bench's GeoTIFFs), same windows of 1,024 px.
- Seams: a synthetic rotated UTM orthophoto with waste piles painted across window edges and corners. The windows'
  raw boxes merged by the platform's default (SAHI's greedy NMM on IOS, class-aware, until nothing merges) and by
  MMDetection's large-image merge (``merge_results_by_nms``, IoU 0.25): the duplicates each leaves, side by side,
  and those of the platform's own run of that orthophoto.
- Georeferencing: that run's polygons against GDAL's own transformer (``gdaltransform``) of their pixel boxes, in
  pixels; beside it, the error of georeferencing with the origin and pixel size only (rotation ignored).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import ROOT, SCRATCH, Cluster, Figure, finished_run, median

REPETITIONS = 2
THROUGHPUT_SIZE = 5_000
MEMORY_TILE = 1024
SEAM_GT = [500_000.0, 0.2 * math.cos(math.radians(12)), 0.2 * math.sin(math.radians(12))]
SEAM_GT += [5_100_000.0, 0.2 * math.sin(math.radians(12)), -0.2 * math.cos(math.radians(12))]
SCORE = 0.3


def _dataset():
    from datasets.models import Dataset

    return Dataset.objects.filter(name="bench-detection").first() or Dataset.objects.create(name="bench-detection")


def _orthophoto(path: Path, name: str):
    from datasets.models import Orthophoto
    from datasets.orthophotos import orthophoto_store

    dataset = _dataset()
    found = Orthophoto.objects.filter(dataset=dataset, name=name).first()
    return found or orthophoto_store(dataset=dataset, source=path, name=name)


def _platform(client, model, ortho, parameters: dict):
    """API call -> stored rows; (wall seconds, the finished run)."""
    start = time.time()
    response = client.post(
        "/api/detection-runs/",
        {"model": model.pk, "orthophotos": [ortho.pk], "parameters": parameters},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    return finished_run(run_id, start, interval=0.5, what="detection run")


def _inferencer(model):
    from mmdet.apis import DetInferencer
    from mmengine.config import Config

    from engine.config import restore_tuples

    config = Config(restore_tuples(json.loads(Path(model.config.path).read_text(encoding="utf-8"))))
    return DetInferencer(model=config, weights=model.checkpoint.path, device="cpu", show_progress=False)


def _windows(path: Path, tile: int, overlap: float):
    """(window, BGR pixels) of the orthophoto, read one at a time with GDAL."""
    from engine.detect import overlap_pixels
    from engine.geometry import windows
    from engine.raster import Raster

    with Raster(path) as raster:
        for x, y, w, h in windows(raster.width, raster.height, tile, overlap_pixels(tile, overlap)):
            yield (x, y, w, h), np.ascontiguousarray(raster.read(x, y, w, h, raster.colour_bands)[..., ::-1])


def _floor(model, path: Path, tile: int, batch: int, keep: list | None = None) -> None:
    """GDAL windows through DetInferencer, ``batch`` at a time; the predictions kept in ``keep`` when given."""
    inferencer = _inferencer(model)
    pending: list = []

    def flush():
        out = inferencer([p for _, p in pending], batch_size=batch, return_datasamples=True, no_save_vis=True)
        if keep is not None:
            keep.extend(zip([w for w, _ in pending], out["predictions"], strict=True))
        pending.clear()

    for window, pixels in _windows(path, tile, 0.2):
        pending.append((window, pixels))
        if len(pending) == batch:
            flush()
    if pending:
        flush()


FLOOR_SCRIPT = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dumpsite.settings")
import django
django.setup()
from models_registry.models import TrainedModel
from bench.detection import _floor
_floor(TrainedModel.objects.get(pk=int(sys.argv[1])), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
"""


def _floor_process(model, path: Path, tile: int, batch: int) -> float:
    """The floor in a process of its own, wall seconds from its start to its end."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", FLOOR_SCRIPT, str(model.pk), str(path), str(tile), str(batch)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def _seam_scene() -> tuple[Path, list[tuple[float, float, float, float]]]:
    """1,024 px of demo ground (the bench model was trained on such tiles) with piles straddling the window edges
    (tile 256, step 205: overlaps 205..256, 410..461, 615..666) and corners, written as a rotated UTM GeoTIFF."""
    from django.contrib.gis.gdal import GDALRaster

    from datasets.demo import background, paint_object

    rng = np.random.default_rng(21)
    canvas = background(rng, 1024)
    piles = []
    for edge in (256, 461, 666):
        piles += [(edge - 40, 100 + edge // 3, 72, 64), (120 + edge // 2, edge - 36, 64, 72)]
    piles += [(220, 220, 70, 70), (425, 630, 72, 66), (630, 425, 66, 72), (840, 840, 70, 70)]
    boxes = []
    for x, y, w, h in piles:
        _, bx, by, bw, bh = paint_object(canvas, rng, 0, x, y, w, h)
        boxes.append((bx, by, bx + bw, by + bh))
    pixels = np.clip(canvas, 0, 255).astype(np.uint8)
    path = SCRATCH / "seams.tif"
    raster = GDALRaster(
        {
            "driver": "GTiff", "name": str(path), "width": 1024, "height": 1024, "datatype": 1, "srid": 32633,
            "bands": [{"data": np.ascontiguousarray(pixels[..., i]).tobytes()} for i in range(3)],
        }
    )  # fmt: skip
    raster.geotransform = SEAM_GT
    del raster  # closes the file
    return path, boxes


def _ios(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def _duplicates(found: list, piles: list) -> tuple[int, int]:
    """(detections of a class on a pile beyond the first of that class, piles with no detection). The merge is
    class-aware: a pile the model also calls debris is two detections by design, not a seam's duplicate."""
    extra = missed = 0
    for pile in piles:
        labels = [label for box, label in found if _ios(box, pile) >= 0.5]
        extra += sum(labels.count(label) - 1 for label in set(labels))
        missed += not labels
    return extra, missed


def _merged_both_ways(predictions: list) -> tuple[list, list]:
    import torch
    from mmdet.utils.large_image import merge_results_by_nms

    from engine.detect import merge_boxes

    raw = []
    for (x, y, _w, _h), sample in predictions:
        inst = sample.pred_instances
        for box, score, label in zip(inst.bboxes.tolist(), inst.scores.tolist(), inst.labels.tolist(), strict=True):
            if score >= SCORE:
                raw.append(
                    {"frame_box": [box[0] + x, box[1] + y, box[2] + x, box[3] + y], "score": score, "label": label}
                )
    ours = [(b["frame_box"], b["label"]) for b in merge_boxes(raw, method="greedy_nmm", threshold=0.5)]
    samples = []
    for _, sample in predictions:
        keep = sample.pred_instances.scores >= SCORE
        sample.pred_instances = sample.pred_instances[keep]
        samples.append(sample)
    merged = merge_results_by_nms(
        samples, [(w[0], w[1]) for w, _ in predictions], src_image_shape=(1024, 1024),
        nms_cfg={"type": "nms", "iou_threshold": 0.25},
    )  # fmt: skip
    merged_instances = merged.pred_instances
    theirs = list(
        zip(merged_instances.bboxes.to(torch.float32).tolist(), merged_instances.labels.tolist(), strict=True)
    )
    return ours, theirs


def _georef_errors(run, ortho_path: Path) -> tuple[float, float]:
    """The largest distance, in pixels, between a stored polygon's corners and GDAL's own transformation of the
    pixel box's corners; and the same for the origin-and-pixel-size-only georeferencing."""
    from django.contrib.gis.gdal import CoordTransform, SpatialReference
    from django.contrib.gis.geos import Point

    from detection.models import Detection

    rows = list(Detection.objects.filter(run=run))
    corners = [(px, py) for d in rows for px, py in _corners(d.pixel_box)]
    done = subprocess.run(
        ["gdaltransform", str(ortho_path), "-t_srs", "EPSG:32633"],
        input="\n".join(f"{px} {py}" for px, py in corners),
        capture_output=True,
        text=True,
        check=True,
    )
    truth = [tuple(map(float, line.split()[:2])) for line in done.stdout.strip().splitlines()]
    to_utm = CoordTransform(SpatialReference(4326), SpatialReference(32633))
    pixel = math.hypot(SEAM_GT[1], SEAM_GT[4])
    worst = naive = 0.0
    i = 0
    for d in rows:
        polygon: Any = d.geometry
        moved: list[Any] = [Point(x, y, srid=4326).transform(to_utm, clone=True) for x, y in polygon.exterior_ring[:4]]
        vertices = [point.coords for point in moved]
        for px, py in _corners(d.pixel_box):
            tx, ty = truth[i]
            i += 1
            worst = max(worst, min(math.hypot(vx - tx, vy - ty) for vx, vy in vertices) / pixel)
            nx, ny = SEAM_GT[0] + px * pixel, SEAM_GT[3] - py * pixel  # origin and pixel size, rotation ignored
            naive = max(naive, math.hypot(nx - tx, ny - ty) / pixel)
    return worst, naive


def _corners(box):
    x1, y1, x2, y2 = box
    return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]


def run() -> list[Figure]:
    from detection.models import Detection

    from .evaluation import _model
    from .ortho_tiling import build_orthophoto
    from .training import trainer_session

    _user, dataset, client = trainer_session()
    model = _model(client, dataset)

    figures = []
    big, small = build_orthophoto(20_000), build_orthophoto(THROUGHPUT_SIZE)
    small_ortho, big_ortho = _orthophoto(small, "ortho-5000"), _orthophoto(big, "ortho-20000")
    seams_path, piles = _seam_scene()
    seams_ortho = _orthophoto(seams_path, "seams")
    batch = 4
    platform, floor = [], []
    with Cluster("qcluster-detection.log") as cluster:
        for i in range(REPETITIONS):
            wall, run_ = _platform(client, model, small_ortho, {"batch_size": batch})
            platform.append(wall)
            cluster.wait_idle(1.0)
            floor.append(_floor_process(model, small, run_.parameters["tile_size"], batch))
            print(f"  pair {i + 1}/{REPETITIONS}: platform {platform[-1]:.1f} s, floor {floor[-1]:.1f} s", flush=True)
        windows = run_.export_summary["windows"]
        peaks = {}
        for name, ortho in (("5k", small_ortho), ("20k", big_ortho)):
            _, done = _platform(client, model, ortho, {"batch_size": batch, "tile_size": MEMORY_TILE})
            peaks[name] = done.export_summary["peak_rss_mb"]
            print(
                f"  {name}: child peak {peaks[name]:.0f} MiB over {done.export_summary['windows']} windows", flush=True
            )
        _, seams_run = _platform(client, model, seams_ortho, {"batch_size": batch, "tile_size": 256, "overlap": 0.2})
    predictions: list = []
    _floor(model, seams_path, 256, batch, keep=predictions)
    ours, theirs = _merged_both_ways(predictions)
    stored = [(d.pixel_box, d.label) for d in Detection.objects.filter(run=seams_run, score__gte=SCORE)]
    p, f = median(platform), median(floor)
    figures.append(
        Figure(
            "detection",
            f"platform (API -> rows, {windows} windows of {run_.parameters['tile_size']} px, batch {batch}) / "
            "GDAL windows through DetInferencer in one process, median",
            f"{p:.1f} s / {f:.1f} s = {p / f:.3f}x",
            "<= 1.15x",
            p / f <= 1.15,
        )
    )
    growth = peaks["20k"] / peaks["5k"]
    figures.append(
        Figure(
            "detection",
            "child peak resident memory, 20,000² / 5,000² px orthophoto",
            f"{peaks['20k']:.0f} MiB / {peaks['5k']:.0f} MiB = {growth:.3f}x",
            "<= 1.10x and < 1,536 MiB",
            growth <= 1.10 and peaks["20k"] < 1536,
        )
    )
    dup_ours, missed_ours = _duplicates(ours, piles)
    dup_theirs, missed_theirs = _duplicates(theirs, piles)
    dup_platform, missed_platform = _duplicates(stored, piles)
    figures.append(
        Figure(
            "detection",
            f"duplicates (same class) left on {len(piles)} piles across seams and corners: platform run / default "
            "merge (SAHI greedy NMM, IOS 0.5) on the windows' boxes",
            f"{dup_platform} / {dup_ours} (piles missed: {missed_platform} / {missed_ours})",
            "0",
            dup_platform == 0 and dup_ours == 0,
        )
    )
    figures.append(
        Figure(
            "detection",
            "duplicates left by MMDetection's large-image merge (IoU-NMS 0.25) on the same boxes",
            f"{dup_theirs} (piles missed: {missed_theirs})",
            "informative",
            None,
        )
    )
    worst, naive = _georef_errors(seams_run, seams_path)
    figures.append(
        Figure(
            "detection",
            "georeferencing error on a 12°-rotated UTM orthophoto, against gdaltransform (origin + pixel size only)",
            f"{worst:.3f} px ({naive:.1f} px)",
            "<= 0.5 px",
            worst <= 0.5,
        )
    )
    return figures
