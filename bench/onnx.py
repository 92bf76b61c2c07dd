"""ONNX Runtime against PyTorch on CPUs (`bash bench/run.sh onnx`), on the bench's trained model:

- The export itself, through the platform (API -> worker -> export -> parity gate on the model's validation split):
  the gate's figures.
- Detection throughput: the same windows of a 5,000 px orthophoto (the model's own window size, 256 px, read once
  with GDAL into memory) through the PyTorch model as a detection run has it (``engine.detect.Batcher``, batch 4:
  the test pipeline and ``test_step``) and through the ONNX file in ONNX Runtime (``engine.onnx_runtime``, one
  window at a time), each in a process of its own (as a detection child) on the same number of threads; alternated,
  medians. Windows per second. (Both in one process, each engine's idle threads spin on the cores the other needs:
  measured 0.77x that way.)
- The same as detection runs through the platform, one each (child start, imports and load included).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from .common import ROOT, Cluster, Figure, finished_run, median

REPETITIONS = 3
WINDOWS = 240  # of the orthophoto's, read once: enough for a steady rate, few enough for a short bench
THREADS = 2


def exported(client, model):
    """The model with a passing ONNX export, made now through the API (its time is a figure)."""
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


RATE_SCRIPT = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dumpsite.settings")
import django
django.setup()
from models_registry.models import TrainedModel
from bench.onnx import engine_rate
print(json.dumps(engine_rate(TrainedModel.objects.get(pk=int(sys.argv[1])), sys.argv[2], sys.argv[3])))
"""


def engine_rate(model, engine: str, path: str) -> dict:
    """Windows per second of one engine over the orthophoto's first windows, in this process alone (after one
    untimed batch): a process per engine, as a detection child has, so that neither's idle threads spin on the
    other's cores."""
    import torch

    from engine.detect import Batcher
    from engine.onnx_runtime import OnnxDetector

    torch.set_num_threads(THREADS)
    pictures = windows(path, 256)
    if engine == "pytorch":
        pytorch = Batcher(model.config.path, model.checkpoint.path, "cpu")

        def detect(batch: list) -> list:
            return pytorch(batch)
    else:
        onnx = OnnxDetector(model.onnx.path, threads=THREADS)

        def detect(batch: list) -> list:
            return onnx(batch)

    detect(pictures[:4])
    start = time.perf_counter()
    out = [r for i in range(0, len(pictures), 4) for r in detect(pictures[i : i + 4])]
    seconds = time.perf_counter() - start
    boxes = sum(sum(score >= 0.3 for score in scores) for _, scores, _ in out)
    return {"rate": len(pictures) / seconds, "windows": len(pictures), "boxes": boxes}


def throughput(model, path) -> tuple[float, float, int, int]:
    """Each engine's windows per second (median of alternated processes), the windows and the boxes each found
    (the same: a check that both did the work)."""
    rates: dict[str, list[float]] = {"pytorch": [], "onnxruntime": []}
    boxes: dict[str, int] = {}
    count = 0
    for _ in range(REPETITIONS):
        for engine in rates:
            done = subprocess.run(
                [sys.executable, "-c", RATE_SCRIPT, str(model.pk), engine, str(path)],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            )
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            rates[engine].append(figures["rate"])
            boxes[engine], count = figures["boxes"], figures["windows"]
            print(f"  {engine}: {figures['rate']:.1f} windows/s", flush=True)
    assert boxes["pytorch"] == boxes["onnxruntime"], boxes
    return median(rates["pytorch"]), median(rates["onnxruntime"]), count, boxes["pytorch"]


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
    torch_rate, onnx_rate, count, boxes = throughput(model, path)
    figures.append(
        Figure(
            "onnx",
            f"detection throughput, {count} windows of 256 px, {THREADS} threads, batch 4: ONNX Runtime / PyTorch "
            f"(windows per second, a process each, median of {REPETITIONS}; {boxes} boxes >= 0.3 each)",
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
