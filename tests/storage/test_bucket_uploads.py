"""Uploads and what the platform draws, with the files in a real S3 server: a zip archive checked where it arrives,
stored in the bucket and imported from there; an upload the store refuses refused whole; an orthophoto stored in
the bucket and read by window through /vsis3/ pixel for pixel; pictures kept in the bucket whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile

from core.errors import ApplicationError
from core.file_cache import cached_picture, keep_picture, stored_tree
from core.storage import read_stored, store_bytes, stored_names
from datasets.import_execution import dataset_import_execute
from datasets.imports import dataset_import_create, stored_upload
from datasets.models import Dataset, DatasetImport
from datasets.orthophotos import orthophoto_store
from datasets.rasters import stored_raster
from engine.raster import Raster
from tests.datasets import zip_layouts
from tests.detection.scenes import write_geotiff

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(roles):
    user = User.objects.create_user("uploader")
    user.groups.add(Group.objects.get(name="Administrator"))
    return user


def zip_upload(path: Path) -> SimpleUploadedFile:
    return SimpleUploadedFile("export.zip", path.read_bytes(), content_type="application/zip")


def test_a_zip_is_stored_in_the_bucket_and_imported_from_there(bucket_storage, admin, tmp_path, settings):
    job = dataset_import_create(upload=zip_upload(zip_layouts.plain(tmp_path / "p.zip")), dataset_name="z", user=admin)
    assert stored_names(stored_upload(job.key)) == [stored_upload(job.key, "archive.zip")]
    assert not any(Path(settings.MEDIA_ROOT).rglob(f"*{job.key}*"))  # nothing of it in the local folder
    assert dataset_import_execute(import_id=job.pk) == "succeeded"
    job.refresh_from_db()
    assert job.images_imported == len(zip_layouts.TILES) and not stored_names(stored_upload(job.key))
    assert not (Path(settings.TRAINING_WORK_ROOT) / "imports" / job.key).exists()  # the worker's copy is gone too
    picture = job.dataset.images.order_by("id").first()
    assert read_stored(picture.image.name, 10 * 2**20)[:2] == b"\xff\xd8"


def test_an_upload_the_store_refuses_is_refused_whole(bucket_storage, s3_server, admin, tmp_path):
    archive = zip_layouts.plain(tmp_path / "p.zip")
    s3_server.stop()
    try:
        with pytest.raises(ApplicationError, match=r"The storage did not take the upload \(\w+\); nothing was"):
            dataset_import_create(upload=zip_upload(archive), dataset_name="refused", user=admin)
    finally:
        s3_server.start()
    assert not DatasetImport.objects.exists() and not Dataset.objects.filter(name="refused").exists()
    assert not stored_names("imports")


def test_an_orthophoto_in_the_bucket_is_read_by_window_as_on_disk(bucket_storage, admin, tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    path = write_geotiff(tmp_path / "o.tif", pixels, srid=32633, geotransform=[500_000, 0.2, 0, 5_100_000, 0, -0.2])
    dataset = Dataset.objects.create(name="orthos", created_by=admin)
    ortho = orthophoto_store(dataset=dataset, source=path, name="o.tif", created_by=admin)
    assert (ortho.width, ortho.height) == (400, 300) and ortho.georeferenced
    with stored_raster(ortho.file.name) as remote, Raster(path) as local:
        assert remote.geotransform == local.geotransform
        window = (37, 51, 200, 120)
        assert np.array_equal(remote.read(*window, [1, 2, 3]), local.read(*window, [1, 2, 3]))


def test_pictures_are_kept_whole_in_the_bucket(bucket_storage):
    drawn = keep_picture("cache/test/a.jpg", lambda out: out.write(b"\xff\xd8 a picture \xff\xd9"))
    assert cached_picture("cache/test/a.jpg") == drawn
    store_bytes(b"\xff\xd8 cut short", "cache/test/b.jpg")  # not a whole JPEG: drawn again
    assert cached_picture("cache/test/b.jpg") is None and cached_picture("cache/test/missing.jpg") is None
    assert sorted((name, size) for name, size, _ in stored_tree("cache")) == [
        ("cache/test/a.jpg", len(drawn)),
        ("cache/test/b.jpg", 12),
    ]


def test_an_orthophoto_the_store_refuses_adds_nothing(bucket_storage, s3_server, admin, tmp_path):
    pixels = np.full((64, 64, 3), 90, dtype=np.uint8)
    path = write_geotiff(tmp_path / "o.tif", pixels, srid=32633, geotransform=[500_000, 0.2, 0, 5_100_000, 0, -0.2])
    dataset = Dataset.objects.create(name="refusing", created_by=admin)
    s3_server.stop()
    try:
        with pytest.raises(ApplicationError, match=r"The storage did not take the orthophoto \(\w+\); nothing was"):
            orthophoto_store(dataset=dataset, source=path, name="o.tif", created_by=admin)
    finally:
        s3_server.start()
    assert not dataset.orthophotos.exists()


def test_a_labelling_task_the_store_refuses_says_so_by_the_errors_type(bucket_storage):
    from botocore.exceptions import EndpointConnectionError

    from labelling.building import task_failure_message

    message = task_failure_message(EndpointConnectionError(endpoint_url="http://10.1.2.3:9000"), 1)
    assert message == "The storage did not take the task's archives (EndpointConnectionError); make the task again."
