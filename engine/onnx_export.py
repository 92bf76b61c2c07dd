"""Export a registered model to ONNX behind the parity gate, inside the child process (``"kind": "onnx_export"``).

The child loads the checkpoint weights-only, traces its graph (``engine.onnx_graphs``) on the first validation
image, then runs the PyTorch model and the ONNX file in ONNX Runtime over every validation image, one after the
other on the same decoded pictures and the same number of threads, and judges them (``engine.parity``). Only a file
that passes is kept at ``out_file``; the report (``result_file``) is written either way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .job import JsonJob
from .loading import load_json_config, write_json
from .onnx_runtime import CLASSES_KEY, PREPROCESS_KEY, OnnxDetector, prepare, preprocess_spec, read_image
from .parity import gate

EXPORTER = "torch.onnx (TorchScript exporter), standard ONNX operators"


@dataclass(frozen=True)
class OnnxExportJob(JsonJob):
    config_file: str  # the model's stored config (JSON)
    checkpoint: str
    classes: list[str]
    gt_file: str  # the model's validation split, COCO, categories in the model's class order
    image_root: str  # where the document's file names are
    out_file: str  # the ONNX file, written only when the gate passes
    events_file: str
    result_file: str
    score_threshold: float = 0.3
    threads: int | None = None  # both sides' CPU threads (None: one per core)
    kind: str = "onnx_export"


def metadata(cfg: Any, classes: list[str]) -> dict[str, str]:
    spec = preprocess_spec(
        [dict(step) for step in cfg.test_dataloader.dataset.pipeline], dict(cfg.model.data_preprocessor)
    )
    return {
        PREPROCESS_KEY: json.dumps(spec),
        CLASSES_KEY: json.dumps(classes, ensure_ascii=False),
        "dumpsite.inputs": "image: (N, 3, H, W) float32 BGR 0-255, N pictures of one size, resized and padded with "
        "the pad_value; image_size: (2,) resized (height, width); scale_factor: (2,) (w, h) of the resize",
        "dumpsite.outputs": "boxes (K, 4) x1 y1 x2 y2 in the pictures' pixels, scores (K,), labels (K,) int64, "
        "batch_index (K,) int64: the picture of each detection",
    }


def timed(run: Callable[[Any], Any], images: dict[int, Any], step: Callable[[], None]) -> tuple[dict, float]:
    """Each image's detections and the total seconds (after one untimed warm-up call)."""
    first = next(iter(images.values()))
    run(first)
    out, total = {}, 0.0
    for image_id, image in images.items():
        started = time.perf_counter()
        out[image_id] = run(image)
        total += time.perf_counter() - started
        step()
    return out, total


def export_onnx(job: OnnxExportJob, emit: Callable[..., Any]) -> dict:
    """Export, gate, keep or drop the file; returns (and writes) the report."""
    # torch / MMDetection load only where this runs (a child process), never on import
    import torch

    # torch / MMDetection load only where this runs (a child process), never on import
    from .detect import Batcher
    from .onnx_graphs import OPSET, export_graph

    started = time.monotonic()
    threads = job.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    gt = json.loads(Path(job.gt_file).read_text(encoding="utf-8"))
    if not gt.get("images"):
        raise ValueError("the validation split has no image to check the export on")
    images = {i["id"]: read_image(Path(job.image_root) / i["file_name"]) for i in gt["images"]}
    total = 2 * len(images) + 1
    done = [0]

    def step() -> None:
        done[0] += 1
        emit("iter", epoch=0, iter=done[0], max_iters=total, eta=None)

    emit("start", max_epochs=0, max_iters=total)
    model = Batcher(job.config_file, job.checkpoint, "cpu")
    emit("setup", device=model.device)
    cfg = load_json_config(job.config_file)
    meta = metadata(cfg, list(job.classes))
    sample = prepare(next(iter(images.values())), json.loads(meta[PREPROCESS_KEY]))
    sample["image"] = np.concatenate([sample["image"], sample["image"]])  # a batch of two: see export_graph
    tmp = Path(job.out_file + ".tmp")
    export_graph(model.model, str(tmp), tuple(torch.from_numpy(sample[k]) for k in sample), meta)
    step()
    onnx = OnnxDetector(str(tmp), threads=threads)
    reference, torch_s = timed(lambda img: model([img])[0], images, step)
    candidate, onnx_s = timed(onnx.detect, images, step)
    report = gate(
        gt, reference, candidate, threshold=job.score_threshold, seconds={"pytorch": torch_s, "onnxruntime": onnx_s}
    )
    report.update(
        exporter=EXPORTER,
        opset=OPSET,
        threads=threads,
        bytes=tmp.stat().st_size,
        torch=torch.__version__,
        onnxruntime=onnx_runtime_version(),
        seconds=round(time.monotonic() - started, 2),
    )
    if report["passed"]:
        tmp.replace(job.out_file)
    else:
        tmp.unlink(missing_ok=True)
    write_json(job.result_file, report)
    return report


def onnx_runtime_version() -> str:
    # ONNX Runtime loads only in a child process, never in the web process
    import onnxruntime

    return str(onnxruntime.__version__)
