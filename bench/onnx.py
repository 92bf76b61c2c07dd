"""ONNX Runtime against PyTorch on CPUs (`bash bench/run.sh onnx`), on the bench's trained model:

- The export itself, through the platform (API -> worker -> export -> parity gate on the model's validation split):
  the gate's figures.
- Detection throughput: the same windows of a 5,000 px orthophoto (the model's own window size, 256 px, read once
  with GDAL into memory) through the PyTorch model as a detection run has it (``engine.detect.Batcher``, batch 4:
  the test pipeline and ``test_step``) and through the ONNX file in ONNX Runtime (``engine.onnx_runtime``, one
  window at a time), both in this process on the same number of threads; alternated, medians. Windows per second.
- The same as detection runs through the platform, one each (child start, imports and load included).
"""

from __future__ import annotations

import time

import numpy as np

from .common import Cluster, Figure, finished_run, median

REPETITIONS = 3
WINDOWS = 240  # of the orthophoto's, read once: enough for a steady rate, few enough for a short bench
THREADS = 2


def exported(client, model):
    """The model with a passing ONNX export, made through the API (once; later runs reuse it)."""
    from training.models import TrainingRun

    model.refresh_from_db()
    if model.onnx and model.onnx_report.get("passed"):
        return model, TrainingRun.objects.get(pk=model.onnx_report["run"])
    start = time.time()
    response = client.post("/api/training-runs/onnx-export/", {"model": model.pk}, content_type="application/json")
    assert response.status_code == 202, response.content
    with Cluster("qcluster-onnx.log"):
        _, run = finished_run(response.json()["id"], start, interval=0.5, what="ONNX export")
    model.refresh_from_db()
    return model, run


def windows(path, tile: int) -> list:
    from engine.detect import overlap_pixels
    from engine.geometry import windows as grid
    from engine.raster import Raster

    out = []
    with Raster(path) as raster:
        for x, y, w, h in grid(raster.width, raster.height, tile, overlap_pixels(tile, 0.2)):
            out.append(np.ascontiguousarray(raster.read(x, y, w, h, raster.colour_bands)[..., ::-1]))
            if len(out) == WINDOWS:
                break
    return out


def throughput(model, pictures: list) -> tuple[float, float, int]:
    """Windows per second of each engine, medians of alternated passes, and the boxes each found (a check that
    both did the work)."""
    import torch

    from engine.detect import Batcher
    from engine.onnx_runtime import OnnxDetector

    torch.set_num_threads(THREADS)
    pytorch = Batcher(model.config.path, model.checkpoint.path, "cpu")
    onnx = OnnxDetector(model.onnx.path, threads=THREADS)
    pytorch(pictures[:4]), onnx(pictures[:4])  # first kernels of each, untimed
    rates: dict[str, list[float]] = {"pytorch": [], "onnxruntime": []}
    found = {}
    for _ in range(REPETITIONS):
        for name in rates:
            start = time.perf_counter()
            if name == "pytorch":
                out = [r for i in range(0, len(pictures), 4) for r in pytorch(pictures[i : i + 4])]
            else:
                out = onnx(pictures)
            rates[name].append(len(pictures) / (time.perf_counter() - start))
            found[name] = sum(sum(1 for s in scores if s >= 0.3) for _, scores, _ in out)
    assert found["pytorch"] == found["onnxruntime"], found
    return median(rates["pytorch"]), median(rates["onnxruntime"]), found["pytorch"]


def run() -> list[Figure]:
    from .detection import _orthophoto, _platform
    from .evaluation import _model
    from .ortho_tiling import build_orthophoto
    from .training import trainer_session

    _user, dataset, client = trainer_session()
    model, export_run = exported(client, _model(client, dataset))
    report = model.onnx_report
    figures = [
        Figure(
            "onnx",
            f"parity gate on the model's {report['images']} validation images: mAP50 PyTorch / ONNX Runtime; "
            "detections matched",
            f"{report['map50']['pytorch']} / {report['map50']['onnxruntime']}; {report['matched']['count']} of "
            f"{report['matched']['total']}",
            "passes (mAP50 within 0.005, all matched)",
            bool(report["passed"]),
        ),
        Figure(
            "onnx",
            "export run through the platform (API -> trace -> gate -> file kept), wall",
            f"{(export_run.finished_at - export_run.created_at).total_seconds():.1f} s",
            "informative",
            None,
        ),
    ]
    path = build_orthophoto(5_000)
    pictures = windows(path, 256)
    torch_rate, onnx_rate, boxes = throughput(model, pictures)
    figures.append(
        Figure(
            "onnx",
            f"detection throughput, {len(pictures)} windows of 256 px, {THREADS} threads: ONNX Runtime / PyTorch "
            f"(windows per second, median of {REPETITIONS}; {boxes} boxes >= 0.3 each)",
            f"{onnx_rate:.1f} / {torch_rate:.1f} = {onnx_rate / torch_rate:.2f}x",
            ">= 1.5x",
            onnx_rate / torch_rate >= 1.5,
        )
    )
    ortho = _orthophoto(path, "ortho-5000")
    walls = {}
    with Cluster("qcluster-onnx.log") as cluster:
        for engine in ("pytorch", "onnxruntime"):
            walls[engine], done = _platform(client, model, ortho, {"engine": engine, "batch_size": 4})
            cluster.wait_idle(1.0)
    figures.append(
        Figure(
            "onnx",
            f"detection run through the platform, {done.export_summary['windows']} windows: ONNX Runtime / PyTorch, "
            "wall (API -> rows)",
            f"{walls['onnxruntime']:.1f} s / {walls['pytorch']:.1f} s = {walls['onnxruntime'] / walls['pytorch']:.2f}x",
            "informative",
            None,
        )
    )
    return figures
