"""Load held: 100 API clients (locust, headless) against gunicorn on the loopback address with the production
settings, for 2 minutes, while a real worker trains a real run and zip imports follow one another, on the same
2 cores. Every request must succeed and the p95 stay at most 250 ms.

The clients (bench/locustfile.py) poll the training's progress, list runs and models (10,000 runs and 1,000 models
under object permissions, the api_lists benchmark's) and download a model card, each waiting 2 to 4 s between
requests (about 33 requests a second in all). The same clients first run against the web alone, for the baseline.
The worker runs at its default niceness (DUMPSITE_WORKER_NICE). gunicorn runs as the container runs it (4 processes,
multiprocess metrics), behind what a TLS proxy would send (``X-Forwarded-Proto: https``)."""

from __future__ import annotations

import csv
import os
import secrets
import socket
import subprocess
import sys
import threading
import time

from .api_lists import ensure_data
from .common import ROOT, SCRATCH, Cluster, Figure
from .training import ensure_demo_dataset
from .zip_import import build_zip

USERS, SPAWN_RATE, DURATION, WEB_PROCESSES, ZIP_TILES = 100, 20, "2m", 4, 2_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _production_env(port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_DEBUG": "0",
        "DJANGO_HTTPS": "1",
        "DJANGO_SECURE_PROXY_SSL": "1",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{port}",
        "PROMETHEUS_MULTIPROC_DIR": str(SCRATCH / "load-metrics"),
    }


def _token(username: str) -> str:
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    Token.objects.filter(user__username=username).delete()
    return Token.objects.create(user=User.objects.get(username=username), key=secrets.token_hex(20)).key


class Imports(threading.Thread):
    """Upload the zip through the API again as soon as the previous import ended, until stopped."""

    def __init__(self, port: int, token: str, archive):
        super().__init__(daemon=True)
        self.url, self.token, self.archive = f"http://127.0.0.1:{port}", token, archive
        self.stopping = threading.Event()
        self.images = 0
        self.errors: list[str] = []

    def run(self) -> None:
        import requests

        from datasets.models import DatasetImport

        headers = {"Authorization": f"Token {self.token}", "X-Forwarded-Proto": "https"}
        while not self.stopping.is_set():
            with open(self.archive, "rb") as fh:
                answer = requests.post(
                    f"{self.url}/api/datasets/import/",
                    headers=headers,
                    files={"archive": ("tiles.zip", fh, "application/zip")},
                    data={"dataset_name": f"load {secrets.token_hex(4)}"},
                    timeout=300,
                )
            if answer.status_code != 202:
                self.errors.append(f"{answer.status_code}: {answer.text[:200]}")
                return
            job = answer.json()["id"]
            while DatasetImport.objects.filter(pk=job, status__in=("queued", "running")).exists():
                time.sleep(1)
            done = DatasetImport.objects.get(pk=job)
            if done.status != "succeeded":
                self.errors.append(done.error_message[:200])
                return
            self.images += done.images_imported


def _locust(port: int, env: dict[str, str], prefix) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "bench" / "locustfile.py"),
            "--headless",
            "--users",
            str(USERS),
            "--spawn-rate",
            str(SPAWN_RATE),
            "--run-time",
            DURATION,
            "--host",
            f"http://127.0.0.1:{port}",
            "--csv",
            str(prefix),
            "--only-summary",
        ],
        cwd=ROOT,
        env=env,
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=open(SCRATCH / "locust.log", "w"),  # noqa: SIM115 - closed with the process
        timeout=600,
    )


def run() -> list[Figure]:
    from models_registry.models import TrainedModel
    from training.models import TrainingRun
    from training.services import training_run_create

    trainer = ensure_data()  # 10,000 runs and 1,000 models of the Trainer's
    dataset = ensure_demo_dataset()
    archive = build_zip(ZIP_TILES)
    model = TrainedModel.objects.filter(created_by=trainer).order_by("id").first()
    assert model is not None
    port = _free_port()
    env = _production_env(port)
    web_log = open(SCRATCH / "load-web.log", "w")  # noqa: SIM115 - closed below
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:dumpsite.gunicorn_conf", "dumpsite.wsgi"]
        + ["--bind", f"127.0.0.1:{port}", "--workers", str(WEB_PROCESSES), "--timeout", "120"],
        cwd=ROOT,
        env=env,
        stdout=web_log,
        stderr=subprocess.STDOUT,
    )
    prefix, alone_prefix = SCRATCH / "load", SCRATCH / "load-alone"
    token = _token(trainer.username)
    try:
        # First the web alone (the same clients, nothing else running): the baseline of the figure below.
        time.sleep(5)
        some_run = TrainingRun.objects.filter(created_by=trainer).order_by("-id").first()
        assert some_run is not None
        _locust(
            port, {**env, "LOAD_RUN": str(some_run.pk), "LOAD_MODEL": str(model.pk), "LOAD_TOKEN": token}, alone_prefix
        )
        with Cluster("qcluster-load.log", DUMPSITE_Q_WORKERS="2"):
            run = training_run_create(dataset=dataset, parameters={"epochs": 30}, created_by=trainer, name="under load")
            while not TrainingRun.objects.filter(pk=run.pk, training_pid__isnull=False).exists():
                time.sleep(0.5)
            imports = Imports(port, _token("bench-root"), archive)
            imports.start()
            before = TrainingRun.objects.get(pk=run.pk).current_iter
            _locust(
                port,
                {**env, "LOAD_RUN": str(run.pk), "LOAD_MODEL": str(model.pk), "LOAD_TOKEN": _token(trainer.username)},
                prefix,
            )
            imports.stopping.set()
            trained = TrainingRun.objects.get(pk=run.pk)
            still = trained.status == "running"
            iterations = trained.current_iter - before
            from training.services import training_run_cancel

            if still:
                training_run_cancel(run=trained, user=None)
            imports.join(timeout=300)
    finally:
        web.terminate()
        web.wait(timeout=60)
        web_log.close()
    total, alone = _stats(prefix), _stats(alone_prefix)
    requests_done, failures, p95, p50 = total["Request Count"], total["Failure Count"], total["95%"], total["50%"]
    return [
        Figure(
            "load",
            f"{USERS} API clients for {DURATION} (gunicorn x{WEB_PROCESSES}) during a training and zip imports: "
            "requests, errors",
            f"{requests_done:,} requests, {failures} errors",
            "0 errors",
            failures == 0 and requests_done > 0,
        ),
        Figure("load", "latency p50 / p95, all requests", f"{p50} / {p95} ms", "p95 <= 250 ms", p95 <= 250),
        Figure(
            "load",
            "the same clients against the web alone (before): requests, errors, p50 / p95",
            f"{alone['Request Count']:,}, {alone['Failure Count']}, {alone['50%']} / {alone['95%']} ms",
            "informative",
            None,
        ),
        Figure(
            "load",
            "meanwhile: training iterations, images imported (import errors)",
            f"{iterations} iterations ({'still running' if still else 'it ended'}), {imports.images:,} images "
            f"({len(imports.errors)} errors)",
            "both progressed",
            iterations > 0 and imports.images > 0 and not imports.errors,
        ),
    ]


def _stats(prefix) -> dict[str, int]:
    with open(f"{prefix}_stats.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    return {k: int(float(row[k])) for k in ("Request Count", "Failure Count", "50%", "95%")}
