"""The files in object storage against the local folder, with a real S3 server on this machine (SeaweedFS on the
loopback address: the tests' ``tests/objectstore.py``), measured side by side in one run:

- the demo training (API call to registered model, a real worker) with every file in the bucket and the worker's
  folders its own, against the same training in the local folder, alternated: at most 1.05x. The bucket's worker
  has read the dataset once before (an untimed run): its host cache is warm, as on any host after its first run;
- that first run fetched every picture, and the next one on the same host fetched none (its cache's hits counted);
- a 5,000-tile zip import whose images go to the bucket, against the floor of uploading the same image bytes to the
  same server with boto3 (one PUT per image, with as many threads as the importer's): at most 1.5x.
"""

from __future__ import annotations

import shutil
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.test.utils import override_settings

from .common import SCRATCH, Cluster, Figure, median
from .training import EPOCHS, IMAGES, _platform_run, trainer_session
from .zip_import import SIZE, build_zip

PAIRS = 3  # alternating trainings per mode (each about a minute; one training varies by up to 10 % on its own)
IMPORTS = 2  # alternating imports and floors
PREFIX = "bench"


@contextmanager
def s3_server():
    """A SeaweedFS server of the bench's own, removed afterwards."""
    from tests.objectstore import S3Server

    root = SCRATCH / "s3"
    shutil.rmtree(root, ignore_errors=True)
    server = S3Server(root).start()
    try:
        yield server
    finally:
        server.remove()


@contextmanager
def in_bucket(server):
    """This process's files in the server's bucket, under PREFIX (the settings of DUMPSITE_STORAGE_URL=s3://...)."""
    from core.buckets import Bucket
    from dumpsite.object_storage import storage_backend

    bucket = Bucket(
        name=server.bucket,
        prefix=PREFIX,
        endpoint_url=server.endpoint,
        region="us-east-1",
        access_key=server.access_key,
        secret_key=server.secret_key,
        addressing_style="path",
    )
    backend = storage_backend(bucket, presign_seconds=60)
    with override_settings(DUMPSITE_BUCKET=bucket, STORAGES={**settings.STORAGES, "default": backend}):
        yield bucket


def bucket_worker(server, host: Path) -> Cluster:
    """A worker whose files are in the bucket and whose media, runs and cache folders are its own (kept between its
    runs, as a host's disk is)."""
    folders = {name: host / name for name in ("media", "runs", "cache")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return Cluster(
        "storage-s3-worker.log",
        **server.environment(PREFIX),
        DUMPSITE_MEDIA_ROOT=str(folders["media"]),
        DUMPSITE_WORK_ROOT=str(folders["runs"]),
        DUMPSITE_HOST_CACHE_ROOT=str(folders["cache"]),
        DUMPSITE_HOST_ID="bench-s3-host",
    )


def _trainings(server) -> tuple[dict[str, list[float]], list[dict]]:
    """Wall times (API call to registered model) of the demo training in each mode, alternated, and the bucket
    runs' cache counts (the first, untimed run's first)."""
    from datasets.demo import demo_dataset_create

    _user, local_dataset, client = trainer_session()
    with in_bucket(server):
        dataset = demo_dataset_create(name=f"bench-demo-s3-{int(time.time())}", images=IMAGES)
    host = SCRATCH / "s3-host"
    shutil.rmtree(host, ignore_errors=True)  # a new host: its first run fetches every picture
    walls: dict[str, list[float]] = {"bucket": [], "local": []}
    caches: list[dict] = []

    def in_the_bucket() -> float:
        with bucket_worker(server, host):
            wall, run = _platform_run(client, dataset.pk)
        caches.append(run.export_summary.get("cache") or {})
        return wall

    def in_the_folder() -> float:
        with Cluster("storage-local-worker.log"):
            return _platform_run(client, local_dataset.pk)[0]

    in_the_bucket()  # untimed: the host's first run on the dataset fills its cache
    for _ in range(PAIRS):
        walls["bucket"].append(in_the_bucket())
        walls["local"].append(in_the_folder())
    return walls, caches


def _import_in_bucket(server, archive: Path, name: str) -> float:
    from datasets.coco_import import import_coco_zip
    from datasets.zips import ZipLimits, check_zip

    with in_bucket(server):
        _drop(name)
        started = time.monotonic()
        contents = check_zip(archive, ZipLimits.from_settings())
        report = import_coco_zip(archive_path=archive, contents=contents, dataset_name=name)
        took = time.monotonic() - started
        assert report.images == SIZE, report.rejected[:3]
        _drop(name)
    return took


def _floor(server, archive: Path) -> float:
    """Upload every image of the archive to the same bucket with boto3, one PUT each, in the importer's threads:
    the image bytes read into memory first, so that the floor times nothing but the uploads."""
    client = server.client()
    with zipfile.ZipFile(archive) as zf:  # read once, before the clock starts: the floor is the uploads alone
        images = {m: zf.read(m) for m in zf.namelist() if m.startswith("images/")}

    def put(member: str) -> None:
        client.put_object(Bucket=server.bucket, Key=f"{PREFIX}/floor/{member}", Body=images[member])

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=settings.DUMPSITE_IMPORT_THREADS) as pool:
        list(pool.map(put, images))
    took = time.monotonic() - started
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=f"{PREFIX}/floor/"):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=server.bucket, Delete={"Objects": keys, "Quiet": True})
    return took


def _drop(name: str) -> None:
    from core.storage import delete_stored
    from datasets.models import Annotation, Dataset

    dataset = Dataset.objects.filter(name=name).first()
    if dataset is not None:
        delete_stored(f"datasets/{dataset.pk}")
        Annotation.objects.filter(image__dataset=dataset).delete()  # boxes protect their classes
        dataset.delete()


def run() -> list[Figure]:
    archive = build_zip(SIZE)
    with s3_server() as server:
        import_times: dict[str, list[float]] = {"import": [], "floor": []}
        for repetition in range(IMPORTS):
            import_times["import"].append(_import_in_bucket(server, archive, f"bench-s3-zip-{repetition}"))
            import_times["floor"].append(_floor(server, archive))
        times, caches = _trainings(server)
    bucket, local = median(times["bucket"]), median(times["local"])
    imported, floor = median(import_times["import"]), median(import_times["floor"])
    first, second = caches[0], caches[1] if len(caches) > 1 else {}
    return [
        Figure(
            "storage",
            f"demo training ({IMAGES} tiles, {EPOCHS} epochs), files in the bucket / in the local folder",
            f"{bucket:.1f} s / {local:.1f} s = {bucket / local:.3f}x",
            "<= 1.05x",
            bucket / local <= 1.05,
        ),
        Figure(
            "storage",
            "pictures the bucket's worker fetched: its first run on the dataset, then the next",
            f"{first.get('misses')} fetched ({first.get('bytes_fetched', 0) / 2**20:.1f} MiB), then "
            f"{second.get('misses')} fetched and {second.get('hits')} cache hits",
            "the second run fetches none",
            bool(first.get("misses")) and second.get("misses") == 0 and second.get("hits") == first.get("misses"),
        ),
        Figure(
            "storage",
            f"zip import of {SIZE:,} tiles into the bucket / boto3 PUTs of the same image bytes "
            f"({settings.DUMPSITE_IMPORT_THREADS} threads each)",
            f"{imported:.1f} s / {floor:.1f} s = {imported / floor:.2f}x",
            "<= 1.5x",
            imported / floor <= 1.5,
        ),
    ]
