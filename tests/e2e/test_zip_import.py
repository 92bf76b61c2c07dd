"""COCO zips as annotation tools export them, uploaded through the API and imported by a real worker: the
report, the live progress (percent, items, ETA) seen while it runs, and the refusals."""

from __future__ import annotations

import io
import json
import random
import time
import zipfile

import pytest
from django.contrib.auth.models import Group, User
from PIL import Image
from rest_framework.test import APIClient

from core.storage import stored_names
from datasets.imports import imports_root, stored_upload
from datasets.models import Annotation, Dataset
from tests.conftest import wait_for
from tests.datasets import zip_layouts
from tests.datasets.zip_layouts import CLASSES, TILES

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def noise_jpeg(seed: int, size: int = 128) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (size, size), random.Random(seed).randbytes(size * size * 3)).save(out, "JPEG")
    return out.getvalue()


def finished(client, job_id: int) -> dict:
    def done():
        body = client.get(f"/api/dataset-imports/{job_id}/").json()
        return body if body["status"] in ("succeeded", "failed") else None

    return wait_for(done, timeout=120, message=f"import {job_id} to finish")


def upload(client, path, **fields):
    with open(path, "rb") as fh:
        return client.post("/api/datasets/import/", {"archive": fh, **fields}, format="multipart")


def test_tool_layouts_are_imported_by_a_worker_with_their_report_and_progress(roles, worker, tmp_path):
    admin = User.objects.create_user("admin")
    admin.groups.add(Group.objects.get(name="Administrator"))
    client = APIClient()
    client.force_authenticate(admin)

    jobs = {}
    for layout, build in zip_layouts.LAYOUTS.items():
        response = upload(client, build(tmp_path / f"{len(jobs)}.zip"), dataset_name=layout)
        assert response.status_code == 202, response.json()
        jobs[layout] = response.json()["id"]
    expected = {(CLASSES[c], x, y, w, h) for *_, boxes in TILES for c, x, y, w, h in boxes}
    for layout, job_id in jobs.items():
        report = finished(client, job_id)
        assert report["status"] == "succeeded", report
        assert (report["layout"], report["images_imported"], report["annotations_imported"]) == (layout, 3, 3)
        assert (report["rejected_count"], report["percent"], report["items_total"]) == (0, 100.0, 3)
        dataset = Dataset.objects.get(name=layout)
        assert report["dataset"] == dataset.pk and dataset.class_names() == CLASSES
        boxes = Annotation.objects.filter(image__dataset=dataset).select_related("dataset_class")
        assert {(b.dataset_class.name, b.x, b.y, b.width, b.height) for b in boxes} == expected

    # Two JSON files: refused at once, with the list; a JSON that is not COCO: failed by the worker, with why.
    two = zip_layouts.plain(tmp_path / "two.zip", extra={"val.json": "{}"})
    with zipfile.ZipFile(two) as archive, zipfile.ZipFile(tmp_path / "two-named.zip", "w") as renamed:
        for name in archive.namelist():
            renamed.writestr("train.json" if name == "annotations.json" else name, archive.read(name))
    refused = upload(client, tmp_path / "two-named.zip", dataset_name="two")
    assert (
        refused.status_code == 400 and "say which is the COCO file: train.json, val.json" in refused.json()["message"]
    )
    with zipfile.ZipFile(tmp_path / "not-coco.zip", "w") as archive:
        archive.writestr("annotations.json", '{"type": "FeatureCollection", "features": []}')
    failed = finished(client, upload(client, tmp_path / "not-coco.zip", dataset_name="not coco").json()["id"])
    assert failed["status"] == "failed" and "not a COCO detection file" in failed["error_message"]
    assert not Dataset.objects.filter(name__in=["two", "not coco"]).exists()

    # A larger archive: its progress is seen while the worker imports it (its transaction still open).
    count = 1500
    big = tmp_path / "big.zip"
    doc = {"categories": [{"id": 1, "name": "waste"}], "images": [], "annotations": []}
    with zipfile.ZipFile(big, "w") as archive:
        for i in range(count):
            archive.writestr(f"images/{i}.jpg", noise_jpeg(i))
            doc["images"].append({"id": i + 1, "file_name": f"images/{i}.jpg"})
            doc["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [1, 1, 20, 20]})
        archive.writestr("annotations.json", json.dumps(doc))
    accepted = upload(client, big, dataset_name="big")
    assert accepted.status_code == 202, accepted.content
    job_id = accepted.json()["id"]
    seen = []
    while True:
        body = client.get(f"/api/dataset-imports/{job_id}/").json()
        seen.append((body["status"], body["percent"], body["items_done"], body["eta_seconds"]))
        if body["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    assert body["status"] == "succeeded" and body["images_imported"] == count, body
    midway = [s for s in seen if s[0] == "running" and 0 < s[1] < 100]
    assert midway and all(s[3] is not None and s[3] >= 0 for s in midway), seen[-5:]
    assert Dataset.objects.get(name="big").images.count() == count
    from datasets.models import DatasetImport

    keys = DatasetImport.objects.filter(created_by=admin).values_list("key", flat=True)
    assert len(keys) == 5 and not any(
        (imports_root() / key).exists() or stored_names(stored_upload(key)) for key in keys
    )  # removed, whatever the outcome


def test_an_orthophoto_uploaded_through_the_api_is_tiled_by_a_worker(roles, worker, tmp_path):
    from datasets.models import DatasetImage
    from tests.datasets.geo_files import write_geotiff
    from tests.datasets.test_tiling import W, pixels, sites_geojson

    admin = User.objects.create_user("admin")
    admin.groups.add(Group.objects.get(name="Administrator"))
    client = APIClient()
    client.force_authenticate(admin)
    ortho = write_geotiff(
        tmp_path / "area.tif",
        srid=32633,
        origin=(500_000.0, 5_100_000.0),
        scale=(0.1, -0.1),
        size=(W, 1500),
        pixels=pixels,
    )
    sites = io.BytesIO(sites_geojson())
    sites.name = "sites.geojson"
    with open(ortho, "rb") as fh:
        response = client.post(
            "/api/datasets/tile-orthophoto/",
            {
                "orthophoto": [fh],
                "annotations": sites,
                "dataset_name": "tiled by a worker",
                "tile_size": 512,
                "overlap": 64,
                "background_ratio": 1,
            },
            format="multipart",
        )
    assert response.status_code == 202, response.json()
    report = finished(client, response.json()["id"])
    assert report["status"] == "succeeded", report
    assert report["stats"]["tiles"] == 20 and report["images_imported"] == 18 and report["percent"] == 100.0
    dataset = Dataset.objects.get(name="tiled by a worker")
    assert DatasetImage.objects.filter(dataset=dataset, footprint__isnull=False).count() == 18
    assert set(dataset.class_names()) == {"waste", "tyres", "rubble"}


def test_a_hostile_exif_date_in_a_zip_is_a_reported_problem_and_the_worker_imports_the_rest(roles, worker, tmp_path):
    """The worker is the one reading the images of a zip: an EXIF capture time out of range (0001-01-01 00:00 at
    +01:00) is a problem of that image in the report, and the import succeeds."""
    from tests.datasets.geo_files import exif_jpeg
    from tests.security.test_hostile_metadata import OUT_OF_RANGE, hostile_jpeg

    admin = User.objects.create_user("admin")
    admin.groups.add(Group.objects.get(name="Administrator"))
    client = APIClient()
    client.force_authenticate(admin)
    doc = {
        "categories": [{"id": 1, "name": "waste"}],
        "images": [{"id": 1, "file_name": "images/old.jpg"}, {"id": 2, "file_name": "images/new.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}],
    }
    archive = tmp_path / "exif.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("annotations.json", json.dumps(doc))
        out.writestr("images/old.jpg", hostile_jpeg())
        out.writestr("images/new.jpg", exif_jpeg(lat=46.0, lon=14.5, colour=(200, 1, 1)))
    response = upload(client, archive, dataset_name="exif zip")
    assert response.status_code == 202, response.json()
    report = finished(client, response.json()["id"])
    assert report["status"] == "succeeded", report
    assert report["images_imported"] == 2 and report["annotations_imported"] == 1
    told = {entry["item"]: entry["found"] for entry in report["georeferenced"]}
    assert told == {"image 1 ('images/old.jpg')": OUT_OF_RANGE, "image 2 ('images/new.jpg')": "EXIF GPS position"}
