"""The pipeline once with every file in a real S3 server (SeaweedFS on the loopback address), and a worker whose media,
runs and cache folders are empty ones of its own, not the web's: nothing can pass through a shared folder.

A dataset's COCO export (streamed by the web from the bucket) is uploaded through the API and imported by the worker
from the bucket; the worker trains on it and registers the model; the web draws thumbnails and gallery pictures and
builds the model's bundle from the bucket; the worker runs a predict check, a detection run over an orthophoto read
by window from the bucket (GDAL's /vsis3/ in the detection child) and a labelling task whose archives it stores
there; the web draws a known site's crop from the bucket. Afterwards neither the web's media folder nor any of the
worker's folders holds a file the pipeline made."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client
from rest_framework.test import APIClient

from core.file_cache import cached_picture
from core.storage import stored_names
from datasets.demo import demo_dataset_create
from datasets.models import DatasetImage, DatasetImport
from datasets.views import thumbnail_name
from detection.models import KnownSite
from models_registry.evaluations import validation_of
from models_registry.models import TrainedModel
from tests.conftest import stop_worker, wait_for
from tests.detection.scenes import scene, write_geotiff
from tests.e2e.detection_checks import UTM_GT, known_sites, painted_polygon
from tests.e2e.test_bucket_runs import files_under, host
from tests.e2e.waiting import finished

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
JPEG = b"\xff\xd8"


def done(client: APIClient, url: str, timeout: float = 300) -> dict:
    """The API's answer at ``url`` once its status is final."""
    return wait_for(
        lambda: (body := client.get(url).json())["status"] in ("succeeded", "failed") and body,
        timeout=timeout,
        interval=0.5,
        message=url,
    )


def test_the_pipeline_keeps_every_file_in_the_bucket(roles, s3_server, bucket_storage, tmp_path):
    admin = User.objects.create_user("admin")
    admin.groups.add(Group.objects.get(name="Administrator"))
    api, web = APIClient(), Client()
    api.force_authenticate(admin)
    web.force_login(admin)
    media = Path(settings.MEDIA_ROOT)
    before = set(files_under(media)) if media.exists() else set()
    source = demo_dataset_create(name="the source", images=24, seed=7)
    worker, folders = host(s3_server, bucket_storage, tmp_path, "host-p")
    try:
        # 1. The web streams the COCO export from the bucket; the upload is stored there and imported by the worker.
        export = api.get(f"/api/datasets/{source.pk}/export/")
        assert export.status_code == 200
        archive = io.BytesIO(b"".join(export.streaming_content))
        archive.name = "export.zip"
        queued = api.post("/api/datasets/import/", {"archive": archive, "dataset_name": "imported"}, format="multipart")
        assert queued.status_code == 202, queued.json()
        key = DatasetImport.objects.get(pk=queued.json()["id"]).key
        imported = done(api, f"/api/dataset-imports/{queued.json()['id']}/", timeout=120)
        assert imported["status"] == "succeeded" and imported["images_imported"] == 24, imported
        assert not stored_names(f"imports/{key}")  # the upload is removed once imported
        dataset = DatasetImport.objects.get(pk=queued.json()["id"]).dataset

        # 2. A training run on the imported dataset, its model registered from the bucket.
        created = api.post("/api/training-runs/", {"dataset": dataset.pk, "parameters": {"epochs": 2}}, format="json")
        assert created.status_code == 201, created.json()
        run = finished(created.json()["id"])
        assert run.status == "succeeded", f"{run.error_message}\n{run.log_tail[-3000:]}"
        model = TrainedModel.objects.get(source_run=run)

        # 3. What the web draws and builds from the bucket: a thumbnail, a gallery picture, the bundle.
        image = DatasetImage.objects.filter(dataset=dataset).order_by("id").first()
        thumbnail = web.get(f"/datasets/images/{image.pk}/thumbnail.jpg")
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == JPEG
        assert cached_picture(thumbnail_name(image)) is not None  # kept in the bucket for the next view
        validation = validation_of(model)
        assert validation is not None
        gallery = api.get(f"/api/evaluations/{validation.pk}/images/").json()["results"]
        picture = api.get(gallery[0]["image_url"])
        assert picture.status_code == 200 and picture.content[:2] == JPEG
        bundle = api.get(f"/api/trained-models/{model.pk}/download/", {"artifact": "bundle"})
        assert bundle.status_code == 200
        with zipfile.ZipFile(io.BytesIO(b"".join(bundle.streaming_content))) as zf:
            weights = zf.read(f"model-{model.pk}/checkpoint.pth")
        assert hashlib.sha256(weights).hexdigest() == model.checkpoint_sha256

        # 4. A predict check: the picture and the preview pass through the bucket only.
        tile = io.BytesIO(b"".join(api.get(f"/api/datasets/{dataset.pk}/export/").streaming_content))
        with zipfile.ZipFile(tile) as zf:
            upload = io.BytesIO(zf.read(next(n for n in zf.namelist() if n.endswith(".jpg"))))
        upload.name = "tile.jpg"
        asked = api.post(f"/api/trained-models/{model.pk}/predict/", {"image": upload}, format="multipart")
        assert asked.status_code == 202, asked.json()
        predicted = done(api, f"/api/predictions/{asked.json()['id']}/")
        assert predicted["status"] == "succeeded", predicted["error_message"]
        preview = api.get(predicted["preview_url"])
        assert preview.status_code == 200 and b"".join(preview.streaming_content)[:2] == JPEG

        # 5. A detection run over an orthophoto the child reads by window from the bucket; the web crops a site.
        painted = scene(600, 600, [(100, 120, 70, 70), (380, 300, 80, 70)], seed=3)
        path = write_geotiff(tmp_path / "area.tif", painted.pixels, srid=32633, geotransform=UTM_GT)
        ortho = api.post("/api/orthophotos/", {"dataset": dataset.pk, "file": path.open("rb")}).json()
        sites = known_sites([painted_polygon(UTM_GT, box, 32633) for box in painted.boxes], 32633)
        parameters = {"score_threshold": 0.05, "tile_size": 256}
        response = api.post(
            "/api/detection-runs/",
            {"model": model.pk, "orthophotos": [ortho["id"]], "parameters": parameters, "known_sites": sites},
            format="json",
        )
        assert response.status_code == 201, response.json()
        detection = finished(response.json()["id"])
        assert detection.status == "succeeded", f"{detection.error_message}\n{detection.log_tail[-3000:]}"
        body = api.get(f"/api/detection-runs/{detection.pk}/").json()
        assert body["windows_total"] == body["windows_done"] > 0 and body["summary"]["sites"]["sites"] == 2
        site = KnownSite.objects.filter(run=detection).order_by("id").first()
        crop = web.get(f"/detection/sites/{site.pk}/crop.jpg")
        assert crop.status_code == 200 and crop.content[:2] == JPEG

        # 6. A labelling task from the dataset: the worker stores its archives in the bucket, the API serves them.
        made = api.post(
            "/api/labelling-tasks/",
            {
                "dataset": dataset.pk,
                "model": model.pk,
                "parameters": {"rule": "all", "count": 4, "score_threshold": 0.01},
            },
            format="json",
        )
        assert made.status_code == 201, made.json()
        task = done(api, f"/api/labelling-tasks/{made.json()['id']}/")
        assert task["status"] == "succeeded", task.get("error")
        archive = api.get(f"/api/labelling-tasks/{task['id']}/download/", {"as": "cvat_coco"})
        assert archive.status_code == 200
        with zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))) as zf:
            assert len([n for n in zf.namelist() if n.startswith("images/")]) == task["images"] > 0
    finally:
        stop_worker(worker)
    # Nothing passed through a folder: the worker's media folder is untouched, its scratch emptied, and the web's
    # media folder holds nothing new.
    assert not files_under(folders["media"]) and not files_under(folders["runs"])
    assert (set(files_under(media)) if media.exists() else set()) == before
