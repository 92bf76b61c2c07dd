"""Sliced detection over whole orthophotos, inside the child process (``"kind": "detect"``).

The worker writes a ``DetectionJob``: the model's stored config and checkpoint, the rasters (each with the affine
map from its pixels to the run's common frame, see below), the window size and overlap, batch size, thresholds.
The child loads the model once, then for every raster reads one window at a time through GDAL (``engine.raster``:
block cache bounded, pixels straight into NumPy), skips windows that hold nodata only, and sends batches of windows
through the model's own test pipeline and ``test_step`` (what ``DetInferencer`` does, without its visualiser).
Boxes move from window to raster pixels, then to the frame, where seams are merged:

- **Frame**: the georeferenced rasters of a run share one frame, the pixel grid of the first one (its CRS, its
  rotation); each raster's pixel-to-frame map is exact for rasters in the same CRS and a fitted affine otherwise.
  A raster without georeferencing is a frame of its own (pixel coordinates, never merged with another).
- **Merge**: class-aware, per frame, with SAHI's postprocess: greedy non-maximum merging on intersection over the
  smaller box (``greedy_nmm``, SAHI's GREEDYNMM; a group becomes the union of its boxes with the highest score) or
  plain NMS (``nms``). A pile cut by a seam is two partial boxes whose IoU may be low but whose intersection over
  the smaller one is high: IoU-NMS keeps both, IoS merging makes them one.

The child writes ``result_file``: the merged detections (frame box; source raster and pixel box of the best
member; how many boxes each merged) and the figures of the run (windows, skipped, raw boxes, peak memory).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .geometry import pixel_to_map, window_count, windows
from .job import JsonJob
from .loading import load_json_config, write_json
from .raster import BucketObject, Raster, limit_block_cache

MERGE_METHODS = ("greedy_nmm", "nms")
PROGRESS_EVERY_S = 0.5
# Windows are read once, row after row: the cache needs to hold the blocks two neighbouring windows share, not
# the file. Bounded below the policy's 128 MB so the child's memory does not grow with the orthophoto (bench).
BLOCK_CACHE_MB = 32


@dataclass(frozen=True)
class DetectionJob(JsonJob):
    config_file: str  # the model's stored config (JSON)
    checkpoint: str
    classes: list[str]
    # Each: {"id": int, "path": str, "frame": int, "to_frame": [a, b, c, d, e, f]} where frame (x, y) =
    # (a + px * b + py * c, d + px * e + py * f): GDAL's geotransform layout; and "scale", the model's pixels per
    # raster pixel where the raster is resampled to the model's ground resolution (absent: 1).
    rasters: list[dict]
    events_file: str
    result_file: str
    tile_size: int = 1024
    overlap: float = 0.2
    score_threshold: float = 0.3
    batch_size: int = 4
    merge: str = "greedy_nmm"
    merge_threshold: float = 0.5
    keep_labels: list[int] | None = None  # None: every class
    device: str | None = None  # "cpu" or "gpu": what the worker gave the run
    # The model's ONNX export (``engine.onnx_export``): run by ONNX Runtime on the CPU instead of PyTorch
    onnx_file: str | None = None
    kind: str = "detect"


def overlap_pixels(tile_size: int, overlap: float) -> int:
    return min(tile_size // 2, round(tile_size * overlap))


def raster_tile(tile_size: int, scale: float) -> int:
    """The side, in the raster's own pixels, of a window the model sees as ``tile_size`` pixels: ``scale`` is the
    model's pixels per raster pixel (the raster's ground resolution over the model's; 1: as it is)."""
    return max(1, round(tile_size / scale))


def raster_windows(
    width: int, height: int, tile_size: int, overlap: float, scale: float = 1.0
) -> Iterator[tuple[int, int, int, int]]:
    tile = raster_tile(tile_size, scale)
    return windows(width, height, tile, overlap_pixels(tile, overlap))


def model_size(window: tuple[int, int, int, int], scale: float) -> tuple[int, int] | None:
    """The (width, height) a window is read at for the model; None where it is read as it is."""
    if scale == 1.0:
        return None
    return max(1, round(window[2] * scale)), max(1, round(window[3] * scale))


def empty_window(pixels: Any, raster: Raster) -> bool:
    """Nodata only: fully transparent (alpha 0), or every colour value the nodata value (0 when none is set)."""
    if raster.alpha_band is not None:
        return not pixels[..., 3].any()
    nodata = raster.nodata if raster.nodata is not None else 0
    return bool((pixels[..., :3] == nodata).all())


def frame_box(transform: list[float], box: list[float]) -> list[float]:
    """The frame's axis-aligned envelope of a pixel box (exact when the raster is the frame's own grid)."""
    x1, y1, x2, y2 = box
    points = [pixel_to_map(transform, px, py) for px, py in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def merge_boxes(boxes: list[dict], *, method: str, threshold: float) -> list[dict]:
    """Class-aware merge of one frame's boxes (each {"frame_box", "score", "label", ...}) with SAHI's postprocess,
    repeated until nothing more merges: SAHI matches each box against the best box of its group, not the group's
    union, so a sliver of a pile seen at a window's edge that overlaps only the union survives one pass (seen on a
    real model); the next pass joins it. Returns the kept boxes, a merged group as the union of its boxes with its
    best member's score and source, and ``merged``: how many boxes it joins."""
    boxes = [{**b, "merged": b.get("merged", 1)} for b in boxes]
    while True:
        merged = merge_pass(boxes, method=method, threshold=threshold)
        if len(merged) == len(boxes) or method == "nms":
            return merged
        boxes = merged


def merge_pass(boxes: list[dict], *, method: str, threshold: float) -> list[dict]:
    """One pass of SAHI's merge over the boxes."""
    # torch / SAHI load only where this runs (a child process), never on import
    import torch
    from sahi.postprocess.combine import batched_greedy_nmm, batched_nms

    if len(boxes) < 2:  # SAHI squeezes its columns: one box would lose its dimension
        return list(boxes)
    table = torch.tensor([[*b["frame_box"], b["score"], b["label"]] for b in boxes], dtype=torch.float64)
    if method == "nms":
        groups: dict[int, list[int]] = {
            int(i): [] for i in batched_nms(table, match_metric="IOS", match_threshold=threshold)
        }
    else:
        groups = {int(k): [int(i) for i in v] for k, v in batched_greedy_nmm(table, "IOS", threshold).items()}
    merged = []
    for keep, members in groups.items():
        best = boxes[keep]
        group = [best, *(boxes[i] for i in members)]
        union = [b["frame_box"] for b in group]
        merged.append(
            {
                **best,
                "frame_box": [
                    min(b[0] for b in union),
                    min(b[1] for b in union),
                    max(b[2] for b in union),
                    max(b[3] for b in union),
                ],
                "merged": sum(b["merged"] for b in group),
            }
        )
    merged.sort(key=lambda b: -b["score"])
    return merged


class Batcher:
    """Batches of windows through the model's test pipeline and ``test_step``: one model load, no file I/O."""

    def __init__(self, config_file: str, checkpoint: str, device: str | None = None):
        # torch / MMDetection load only where this runs (a child process), never on import
        import torch
        from mmcv.transforms import Compose
        from mmdet.apis import init_detector
        from mmdet.utils import register_all_modules

        # torch / MMDetection load only where this runs (a child process), never on import
        from .checkpoints import install_safe_globals
        from .device import select_device

        install_safe_globals()
        register_all_modules(init_default_scope=True)
        self.device = select_device(cuda_available=torch.cuda.is_available(), amp=False, wanted=device)
        cfg = load_json_config(config_file)
        self.model = init_detector(cfg, checkpoint, device=self.device)
        steps = [dict(step) for step in cfg.test_dataloader.dataset.pipeline]
        steps[0] = {"type": "mmdet.LoadImageFromNDArray"}  # windows come as arrays, as DetInferencer's do
        self.pipeline = Compose(steps)
        self.torch = torch

    def __call__(self, images: list[Any]) -> list[tuple[list, list, list]]:
        # mmengine's collate: the one DetInferencer uses
        from mmengine.dataset import pseudo_collate

        data = pseudo_collate([self.pipeline({"img": img, "img_id": i}) for i, img in enumerate(images)])
        with self.torch.no_grad():
            results = self.model.test_step(data)
        out = []
        for sample in results:
            pred = sample.pred_instances
            out.append((pred.bboxes.cpu().tolist(), pred.scores.cpu().tolist(), pred.labels.cpu().tolist()))
        return out


class Sweep:
    """One pass over the rasters: windows read, nodata skipped, batches through the model, boxes kept by frame."""

    def __init__(self, job: DetectionJob, model: Any, total: int, emit: Callable[..., None]):
        self.job, self.model, self.total, self.emit = job, model, total, emit
        self.keep = set(job.keep_labels) if job.keep_labels is not None else None
        self.found: dict[int, list[dict]] = {}
        self.done = self.skipped = self.raw = 0
        self.started = self.last_emit = time.monotonic()
        self.batch: list[tuple[Any, tuple[int, int, int, int], dict]] = []

    def raster(self, spec: dict, raster: Raster) -> None:
        bands = raster.colour_bands + ([raster.alpha_band] if raster.alpha_band else [])
        scale = float(spec.get("scale") or 1.0)
        for window in raster_windows(raster.width, raster.height, self.job.tile_size, self.job.overlap, scale):
            pixels = raster.read(*window, bands, size=model_size(window, scale))
            if empty_window(pixels, raster):
                self.skipped += 1
            else:
                self.batch.append((pixels[..., 2::-1].copy(), window, spec))  # RGB to BGR: as the model trained
                if len(self.batch) >= self.job.batch_size:
                    self.flush()
            self.done += 1
            if time.monotonic() - self.last_emit >= PROGRESS_EVERY_S:
                self.emit("iter", epoch=0, iter=self.done, max_iters=self.total, eta=self.eta())
                self.last_emit = time.monotonic()
        self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        outputs = self.model([item[0] for item in self.batch])
        for (pixels, (x, y, w, h), spec), (bboxes, scores, labels) in zip(self.batch, outputs, strict=True):
            # from the pixels the model saw back to the raster's: the exact ratio of the read's sizes
            sx, sy = w / pixels.shape[1], h / pixels.shape[0]
            for bbox, score, label in zip(bboxes, scores, labels, strict=True):
                if score < self.job.score_threshold or (self.keep is not None and label not in self.keep):
                    continue
                self.raw += 1
                pixel = [bbox[0] * sx + x, bbox[1] * sy + y, bbox[2] * sx + x, bbox[3] * sy + y]
                self.found.setdefault(spec["frame"], []).append(
                    {
                        "raster": spec["id"],
                        "label": int(label),
                        "score": round(float(score), 5),
                        "pixel_box": [round(v, 2) for v in pixel],
                        "frame_box": frame_box(spec["to_frame"], pixel),
                    }
                )
        self.batch.clear()

    def eta(self) -> float | None:
        elapsed = time.monotonic() - self.started
        return round(elapsed / self.done * (self.total - self.done), 1) if self.done else None


def peak_rss_mb() -> float:
    """This process image's own peak resident memory (the kernel's VmHWM): ``ru_maxrss`` would carry the forking
    worker's over the exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def open_raster(spec: dict) -> Raster:
    """A job's orthophoto: a local file, or an object of the site's bucket read by window."""
    if "object" in spec:
        return Raster.in_bucket(BucketObject.from_job(spec["object"]))
    return Raster(spec["path"])


def raster_size(spec: dict) -> tuple[int, int]:
    """The orthophoto's width and height: from the job (the worker knows them), else read from its header."""
    if "width" in spec and "height" in spec:
        return int(spec["width"]), int(spec["height"])
    with open_raster(spec) as raster:
        return raster.width, raster.height


def window_total(job: DetectionJob) -> int:
    """How many windows the job's rasters are cut into, counted without making them."""
    total = 0
    for spec in job.rasters:
        tile = raster_tile(job.tile_size, float(spec.get("scale") or 1.0))
        total += window_count(*raster_size(spec), tile, overlap_pixels(tile, job.overlap))
    return total


def detector(job: DetectionJob) -> Any:
    """The model a job detects with: its ONNX export in ONNX Runtime, or the checkpoint in PyTorch."""
    if job.onnx_file:
        # ONNX Runtime loads only where this runs (a child process), never on import
        from .onnx_runtime import OnnxDetector

        return OnnxDetector(job.onnx_file)
    return Batcher(job.config_file, job.checkpoint, job.device)


def detect(job: DetectionJob, emit: Callable[..., None], model: Any = None) -> dict:
    """Run the whole job; ``emit(event, **payload)`` writes progress events. Returns (and writes) the result.
    ``model``: the job's detector already loaded (a warm child's), else it is loaded here."""
    started = time.monotonic()
    limit_block_cache(BLOCK_CACHE_MB)
    total = window_total(job)
    model = model if model is not None else detector(job)
    emit("setup", device=model.device)
    emit("start", max_epochs=0, max_iters=total)
    sweep = Sweep(job, model, total, emit)
    for spec in job.rasters:  # one open at a time: a bucket's object may be read from this thread while it is open
        with open_raster(spec) as raster:
            sweep.raster(spec, raster)
    emit("iter", epoch=0, iter=sweep.done, max_iters=total, eta=0.0)
    detections = []
    for frame, boxes in sorted(sweep.found.items()):
        for box in merge_boxes(boxes, method=job.merge, threshold=job.merge_threshold):
            detections.append({**box, "frame": frame})
    result = {
        "detections": detections,
        "windows": total,
        "skipped_nodata": sweep.skipped,
        "raw_boxes": sweep.raw,
        "device": model.device,
        "seconds": round(time.monotonic() - started, 3),
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(job.result_file, result)
    return result
