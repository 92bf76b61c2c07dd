"""Web process footprint: a gunicorn worker serving the API, its RSS, and proof that torch and mmdet stay out.

Compared with a bare process that imports the training stack (torch + mmdet), the weight the web worker would
carry if an import leaked into it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil

from .common import ROOT, SCRATCH, Figure, peak_rss_mib, rss_mib

REQUESTS = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, path: str, token: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        return response.status


def _worker_pid(master: int) -> int:
    for _ in range(300):
        children = psutil.Process(master).children()
        if children:
            return children[0].pid
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


def _engine_rss() -> float:
    """RSS of a process that has only imported what the training child imports."""
    code = "import torch, mmdet.apis, mmengine.runner, psutil\nprint(psutil.Process().memory_info().rss // 1024)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def run() -> list[Figure]:
    from rest_framework.authtoken.models import Token

    from datasets.models import Dataset
    from training.models import TrainingRun

    from .training import ensure_trainer

    user = ensure_trainer()
    token, _ = Token.objects.get_or_create(user=user)
    some_run = TrainingRun.objects.order_by("-id").values_list("pk", flat=True).first()
    dataset = Dataset.objects.order_by("id").first()
    paths = ["/api/training-runs/?page_size=50", "/api/trained-models/?page_size=50", "/api/datasets/", "/api/schema/"]
    if some_run:
        paths += [f"/api/training-runs/{some_run}/", f"/api/training-runs/{some_run}/metrics/"]
    if dataset:
        paths.append(f"/api/datasets/{dataset.pk}/images/")
    SCRATCH.mkdir(parents=True, exist_ok=True)
    report = SCRATCH / "web-report.json"
    report.unlink(missing_ok=True)
    port = _free_port()
    env = dict(os.environ, BENCH_WEB_REPORT=str(report))
    master = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "dumpsite.wsgi:application",
            "--workers",
            "1",
            "--bind",
            f"127.0.0.1:{port}",
            "--config",
            "python:bench.gunicorn_probe",
        ],
        cwd=ROOT,
        env=env,
        stdout=open(SCRATCH / "gunicorn.log", "ab"),  # noqa: SIM115 - handed to the server process
        stderr=subprocess.STDOUT,
    )  # noqa: SIM115
    try:
        worker = _worker_pid(master.pid)
        for _ in range(300):
            try:
                _get(port, paths[0], token.key)
                break
            except OSError:
                time.sleep(0.1)
        rss_start = rss_mib(worker)
        for i in range(REQUESTS):
            assert _get(port, paths[i % len(paths)], token.key) == 200, paths[i % len(paths)]
        rss_after, rss_peak = rss_mib(worker), peak_rss_mib(worker)
        maps = "\n".join(m.path for m in psutil.Process(worker).memory_maps(grouped=False))
        mapped = sorted({name for name in ("torch", "mmcv", "mmdet", "cv2") if f"/{name}/" in maps})
    finally:
        master.send_signal(signal.SIGTERM)
        master.wait(timeout=60)
    imported = json.loads(report.read_text())["heavy"]
    engine = _engine_rss()
    clean = not imported and not mapped
    return [
        Figure(
            "web footprint",
            f"gunicorn worker RSS: started / after {REQUESTS} API requests (peak)",
            f"{rss_start:.0f} / {rss_after:.0f} MiB ({rss_peak:.0f})",
            "informative",
            None,
        ),
        Figure(
            "web footprint",
            "torch, mmdet, mmengine, mmcv, cv2 in the web worker",
            f"imported: {', '.join(imported) or 'none'}; mapped: {', '.join(mapped) or 'none'}",
            "none",
            clean,
        ),
        Figure(
            "web footprint",
            "web worker RSS / a process that only imports torch + mmdet",
            f"{rss_after:.0f} / {engine:.0f} MiB = {rss_after / engine:.2f}x",
            "informative",
            None,
        ),
    ]
