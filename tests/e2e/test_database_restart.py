"""PostgreSQL stopped and started while a run trains and an import proceeds: the worker and the web reconnect by
themselves, the run finishes (or fails with a clear message, never stays 'running'), the import is whole or absent,
and the next run succeeds, with no process restarted by hand."""

from __future__ import annotations

import io
import json
import random
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from PIL import Image
from rest_framework.authtoken.models import Token

from datasets.demo import demo_dataset_create
from datasets.imports import dataset_import_create
from datasets.models import Dataset, DatasetImage, DatasetImport
from tests.conftest import start_worker, stop_worker, wait_for, worker_env
from tests.e2e.waiting import finished, training
from training.services import training_run_create

pytestmark = [pytest.mark.e2e, pytest.mark.exclusive, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
IMAGES = 4000


def cluster_of_port(port: int = 5432) -> tuple[str, str]:
    """The (version, name) of the local PostgreSQL cluster on ``port`` (Debian's pg_lsclusters)."""
    for line in subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout.splitlines():
        version, name, cluster_port = line.split()[:3]
        if int(cluster_port) == port:
            return version, name
    raise RuntimeError(f"no local PostgreSQL cluster on port {port}")


def restart_postgresql(down_seconds: float) -> None:
    """Stop the server (fast: every connection is cut), keep it down, start it again, and wait until it answers."""
    version, name = cluster_of_port(int(str(settings.DATABASES["default"]["PORT"])))
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "stop", "-m", "fast"], check=True)
    try:
        time.sleep(down_seconds)
    finally:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"], check=True)
    for _ in range(60):
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0:
            break
        time.sleep(0.5)
    connection.close()  # this process's connection broke too


def noise_zip(count: int) -> bytes:
    out, images, boxes = io.BytesIO(), [], []
    with zipfile.ZipFile(out, "w") as zf:
        for i in range(count):
            picture = io.BytesIO()
            Image.frombytes("RGB", (96, 96), random.Random(i).randbytes(96 * 96 * 3)).save(picture, "JPEG")
            zf.writestr(f"images/t{i}.jpg", picture.getvalue())
            images.append({"id": i + 1, "file_name": f"t{i}.jpg", "width": 96, "height": 96})
            boxes.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [8, 8, 20, 20], "iscrowd": 0})
        coco = {"images": images, "annotations": boxes, "categories": [{"id": 1, "name": "waste"}]}
        zf.writestr("annotations/instances_default.json", json.dumps(coco))
    return out.getvalue()


def start_web(db_name: str, log: Path) -> tuple[subprocess.Popen, int]:
    """gunicorn as the container runs it, keeping its connections (CONN_MAX_AGE) so that a stale one would show."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = worker_env(db_name, DJANGO_ALLOWED_HOSTS="127.0.0.1", POSTGRES_CONN_MAX_AGE="600")
    with open(log, "ab") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "dumpsite.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return web, port


def api_status(port: int, token: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/datasets/", headers={"Authorization": f"Token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:
        return 0  # not listening (yet)


def image_files() -> int:
    """Dataset pictures stored (datasets/<id>/images/...), whichever dataset they were stored for."""
    return sum(1 for p in (Path(settings.MEDIA_ROOT) / "datasets").glob("*/images/*") if p.is_file())


def test_a_database_restart_while_a_run_trains_and_an_import_proceeds(roles, tmp_path):
    db_name = connection.settings_dict["NAME"]
    admin = User.objects.create_superuser("restart-admin", password="x")
    token = Token.objects.create(user=admin).key
    worker = start_worker(db_name, tmp_path / "worker.log", DUMPSITE_Q_WORKERS="2")
    web, port = start_web(db_name, tmp_path / "web.log")
    try:
        wait_for(lambda: api_status(port, token) == 200, timeout=60, interval=0.5, message="the web to answer")
        dataset = demo_dataset_create(name="restart", images=40, seed=21)
        # 32 training tiles, batch 8: 4 iterations an epoch, 32 in all.
        run = training(training_run_create(dataset=dataset, parameters={"epochs": 8}).pk, min_iter=1)
        files_before = image_files()
        job = dataset_import_create(
            upload=SimpleUploadedFile("big.zip", noise_zip(IMAGES)), dataset_name="restart-import", user=admin
        )
        wait_for(
            lambda: DatasetImport.objects.filter(pk=job.pk, status="running", items_done__gt=0).exists(),
            timeout=120,
            interval=0.2,
            message="the import to be under way",
        )
        restart_postgresql(down_seconds=5)

        run = finished(run.pk, timeout=600)
        assert run.status == "succeeded" or "database" in run.error_message, (run.status, run.error_message)
        job = wait_for(
            lambda: DatasetImport.objects.filter(pk=job.pk, status__in=("succeeded", "failed")).first(),
            timeout=180,
            message="the import to end",
        )
        imported = Dataset.objects.filter(name="restart-import").first()
        if job.status == "succeeded":
            assert DatasetImage.objects.filter(dataset=imported).count() == IMAGES
        else:  # absent: no dataset, no rows, no file of it left behind
            assert "database" in job.error_message, job.error_message
            assert imported is None and not DatasetImage.objects.exclude(dataset=dataset).exists()
            assert image_files() == files_before

        after = finished(training_run_create(dataset=dataset, parameters={"epochs": 1}).pk)
        assert after.status == "succeeded", (after.error_message, worker.output()[-3000:])
        assert worker.proc.poll() is None and web.poll() is None  # nothing restarted by hand
        assert api_status(port, token) == 200
    finally:
        stop_worker(worker)
        web.terminate()
        web.wait(timeout=30)
    print(f"run {run.status}; import {job.status}: {job.error_message or job.images_imported}")
