"""Shared fixtures. Tests run on the real PostGIS database (pytest-django creates test_<name>).

Files go to a temporary tree per test session; a real worker cluster (``manage.py worker``) started by the
``worker`` fixture is pointed at the same test database and the same tree through its environment.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.test.utils import override_settings
from PIL import Image

from workers.cluster import start_cluster, stop_cluster, wait_for

pytest_plugins = ["tests.parallel"]  # two workers share this machine (scripts/test.sh)


@pytest.fixture(scope="session", autouse=True)
def isolated_file_tree():
    """Media, run scratch space and thumbnails in a temporary tree for the whole session (removed at its end),
    and no free-disk floor; workers started by the tests get the same tree through their environment."""
    root = Path(tempfile.mkdtemp(prefix="dumpsite-tests-"))
    override = override_settings(
        MEDIA_ROOT=root / "media",
        TRAINING_WORK_ROOT=root / "runs",
        DUMPSITE_HOST_CACHE_ROOT=root / "host-cache",
        TRAINING_MIN_FREE_BYTES=0,
    )
    override.enable()
    try:
        yield root
    finally:
        override.disable()
        shutil.rmtree(root, ignore_errors=True)


def jpeg_bytes(width: int = 64, height: int = 48, colour=(120, 130, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture
def make_dataset(db):
    """Build a dataset with ``images`` images of ``size`` px, each with one box of the first class."""
    from datasets.services import annotation_create, dataset_create, dataset_image_create

    def build(name="ds", classes=("waste",), images=3, size=(64, 48), boxes=True):
        dataset = dataset_create(name=name, class_names=list(classes))
        first = dataset.classes.order_by("position").first()
        for i in range(images):
            colour = ((i * 37) % 256, (i * 91) % 256, 80)
            image = dataset_image_create(
                dataset=dataset, content=jpeg_bytes(*size, colour=colour), original_name=f"img{i}.jpg"
            )
            if boxes:
                annotation_create(image=image, dataset_class=first, x=1, y=2, width=10, height=12)
        return dataset

    return build


@pytest.fixture
def roles(db):
    """The role groups. A data migration creates them, but a transactional test's flush empties every table, so
    tests that need them apply them again (idempotent)."""
    from django.contrib.contenttypes.models import ContentType

    from access.roles import sync_roles

    ContentType.objects.clear_cache()  # a flush recreates content types under new ids
    sync_roles()
    ContentType.objects.clear_cache()


class Worker:
    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc, self.log = proc, log

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def worker_env(db_name: str, **extra: str) -> dict:
    """A worker's environment: the test database and file tree, then ``extra`` (which wins)."""
    env = dict(os.environ)
    env.update(
        POSTGRES_DB=db_name,
        DUMPSITE_MEDIA_ROOT=str(settings.MEDIA_ROOT),
        DUMPSITE_WORK_ROOT=str(settings.TRAINING_WORK_ROOT),
        DUMPSITE_HOST_CACHE_ROOT=str(settings.DUMPSITE_HOST_CACHE_ROOT),
        DUMPSITE_RUN_SYNC_SECONDS="0.5",
        DUMPSITE_MIN_FREE_BYTES="0",
        DUMPSITE_Q_POLL="0.1",
        DUMPSITE_PROGRESS_INTERVAL="0.5",
        # The tests' webhook receivers listen on the loopback address; a failed delivery is tried again quickly.
        DUMPSITE_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32",
        DUMPSITE_WEBHOOK_RETRY_BASE="0.5",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def start_worker(db_name: str, log: Path, **extra_env: str) -> Worker:
    return Worker(start_cluster(log, env=worker_env(db_name, **extra_env)), log)


def stop_worker(worker: Worker, timeout: float = 30) -> None:
    stop_cluster(worker.proc, timeout)


@pytest.fixture
def worker(transactional_db, tmp_path):
    """A real django-q2 cluster on the test database, stopped after the test."""
    from django.db import connection

    w = start_worker(connection.settings_dict["NAME"], tmp_path / "qcluster.log")
    yield w
    stop_worker(w)


@pytest.fixture
def worker_keeping_scratch(transactional_db, tmp_path):
    """A real worker that keeps every scratch file of its runs (DUMPSITE_KEEP_SCRATCH=1), for inspection."""
    from django.db import connection

    w = start_worker(connection.settings_dict["NAME"], tmp_path / "qcluster.log", DUMPSITE_KEEP_SCRATCH="1")
    yield w
    stop_worker(w)


__all__ = ["jpeg_bytes", "start_worker", "stop_worker", "wait_for", "worker_env"]


@pytest.fixture
def world(db, roles, make_dataset, tmp_path):
    """One user per role, a dataset, the owner's private run with its model, a published base model."""
    from tests.world import build_world

    return build_world(make_dataset, tmp_path)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS) on the loopback address for the whole session, started on first use."""
    from tests.objectstore import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.remove()


@pytest.fixture
def bucket_storage(s3_server, settings):
    """This test's files in the S3 server's bucket, under a prefix of their own (the settings of a site started
    with DUMPSITE_STORAGE_URL=s3://...)."""
    import secrets

    from core.buckets import Bucket
    from dumpsite.object_storage import storage_backend

    bucket = Bucket(
        name=s3_server.bucket,
        prefix=f"test-{secrets.token_hex(4)}",
        endpoint_url=s3_server.endpoint,
        region="us-east-1",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        addressing_style="path",
    )
    settings.DUMPSITE_BUCKET = bucket
    settings.DUMPSITE_S3_PRESIGN_SECONDS = 60
    settings.STORAGES = {**settings.STORAGES, "default": storage_backend(bucket, presign_seconds=60)}
    return bucket
