"""Detection through the API without a worker: orthophotos kept and refused, runs refused with a clear error and
nothing left, the detections of a run filtered and paged, downloads, ignore zones."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.contrib.gis.gdal import GDALRaster
from django.contrib.gis.geos import Polygon
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets.models import Orthophoto
from detection.execution import flag_ignored
from detection.models import Detection
from tests.detection.scenes import rotated, write_geotiff
from training.models import TrainingRun

GT = rotated((500_000.0, 5_100_000.0), 0.2, 0.0)


def tif_upload(tmp_path, name="area.tif", srid=32633, seed=0, **kwargs) -> SimpleUploadedFile:
    pixels = np.random.default_rng(seed).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    path = write_geotiff(tmp_path / name, pixels, srid=srid, geotransform=GT if srid else None, **kwargs)
    return SimpleUploadedFile(name, path.read_bytes(), content_type="image/tiff")


def stored_files(dataset) -> list[Path]:
    folder = Path(settings.MEDIA_ROOT) / f"datasets/{dataset.pk}/orthophotos"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_an_orthophoto_is_kept_once_with_its_georeferencing(world, tmp_path):
    client = world.client("admin")
    response = client.post("/api/orthophotos/", {"dataset": world.dataset.pk, "file": tif_upload(tmp_path)})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["georeferenced"] and body["srid"] == 32633 and body["pixel_size_m"] == pytest.approx(0.2)
    assert (body["width"], body["height"], body["bands"]) == (120, 90, 3)
    assert body["footprint"]["type"] == "Polygon" and 14.9 < body["footprint"]["coordinates"][0][0][0] < 15.1
    again = client.post("/api/orthophotos/", {"dataset": world.dataset.pk, "file": tif_upload(tmp_path)})
    assert again.json()["id"] == body["id"] and len(stored_files(world.dataset)) == 1
    photo = client.post("/api/orthophotos/", {"dataset": world.dataset.pk, "file": tif_upload(tmp_path, srid=None)})
    assert photo.status_code == 201 and photo.json()["georeferenced"] is False and photo.json()["footprint"] is None


def test_a_16_bit_orthophoto_or_another_format_is_refused_and_nothing_is_kept(world, tmp_path):
    client = world.client("admin")
    wide = tmp_path / "wide.tif"
    GDALRaster(
        {
            "driver": "GTiff",
            "name": str(wide),
            "width": 40,
            "height": 30,
            "srid": 32633,
            "datatype": 2,
            "bands": [{"data": list(range(1200))}],
        }
    ).geotransform = GT
    refused = client.post(
        "/api/orthophotos/", {"dataset": world.dataset.pk, "file": SimpleUploadedFile("wide.tif", wide.read_bytes())}
    )
    assert refused.status_code == 400 and "gdal_translate -ot Byte -scale" in refused.json()["message"]
    png = SimpleUploadedFile("area.tif", b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    not_tiff = client.post("/api/orthophotos/", {"dataset": world.dataset.pk, "file": png})
    assert not_tiff.status_code == 400 and "GeoTIFF" in not_tiff.json()["message"]
    assert stored_files(world.dataset) == [] and not Orthophoto.objects.filter(dataset=world.dataset).exists()


def test_a_run_names_each_wrong_parameter(world):
    client = world.client("owner")
    body = {"model": world.model.pk, "orthophotos": [world.orthophoto.pk]}
    bad = {"tile_size": 10, "overlap": 0.9, "merge": "union", "classes": ["tyres"], "epochs": 3}
    response = client.post("/api/detection-runs/", {**body, "parameters": bad}, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"tile_size", "overlap", "merge", "classes", "epochs"}, errors
    assert "64 to 4096" in errors["tile_size"] and "tyres" in errors["classes"]
    ok = client.post("/api/detection-runs/", {**body, "parameters": {"overlap": 0.25}}, format="json")
    assert ok.status_code == 201
    params = ok.json()["parameters"]
    assert params["tile_size"] == 256 and params["overlap"] == 0.25 and params["merge"] == "greedy_nmm"
    assert params["classes"] == world.model.class_names and ok.json()["orthophotos"] == [world.orthophoto.pk]


def test_a_hidden_model_or_orthophoto_is_answered_as_a_missing_one(world, tmp_path):
    peer = world.client("other_trainer")
    hidden = peer.post("/api/detection-runs/", {"model": world.model.pk, "orthophotos": [world.orthophoto.pk]})
    missing = peer.post("/api/detection-runs/", {"model": 999_999, "orthophotos": [world.orthophoto.pk]})
    assert hidden.status_code == missing.status_code == 400 and hidden.json() == missing.json()
    outsider = User.objects.create_user("outsider")
    outsider.user_permissions.add(
        *Permission.objects.filter(codename__in=["run_detection", "view_trainedmodel"]),
    )
    client = world.client("owner")
    client.force_authenticate(outsider)
    unseen = client.post("/api/detection-runs/", {"model": world.model.pk, "orthophotos": [world.orthophoto.pk]})
    gone = client.post("/api/detection-runs/", {"model": world.model.pk, "orthophotos": [999_999]})
    assert unseen.status_code == gone.status_code == 400
    assert unseen.json()["message"] == gone.json()["message"] == "No such orthophoto."


def test_a_model_without_a_runnable_config_and_orthophotos_of_two_areas_are_refused(world, tmp_path, make_dataset):
    client = world.client("admin")
    published = client.post("/api/detection-runs/", {"model": world.published.pk, "orthophotos": [world.orthophoto.pk]})
    assert published.status_code == 400 and "no runnable config" in published.json()["message"]
    other = make_dataset(name="elsewhere")
    second = client.post("/api/orthophotos/", {"dataset": other.pk, "file": tif_upload(tmp_path, seed=3)}).json()
    mixed = client.post(
        "/api/detection-runs/", {"model": world.model.pk, "orthophotos": [world.orthophoto.pk, second["id"]]}
    )
    assert mixed.status_code == 400 and "one dataset" in mixed.json()["message"]


def test_uploads_of_a_refused_run_are_not_kept(world, tmp_path):
    client = world.client("admin")
    before = TrainingRun.objects.count()
    response = client.post(
        "/api/detection-runs/",
        {
            "model": world.model.pk,
            "dataset": world.dataset.pk,
            "files": [tif_upload(tmp_path, "a.tif", seed=5), tif_upload(tmp_path, "b.tif", seed=6)],
            "parameters": json.dumps({"tile_size": 5}),
        },
        format="multipart",
    )
    assert response.status_code == 400 and "tile_size" in response.json()["errors"]
    assert TrainingRun.objects.count() == before and stored_files(world.dataset) == []
    good = client.post(
        "/api/detection-runs/",
        {"model": world.model.pk, "dataset": world.dataset.pk, "files": [tif_upload(tmp_path, "a.tif", seed=5)]},
        format="multipart",
    )
    assert good.status_code == 201 and len(good.json()["orthophotos"]) == 1 and len(stored_files(world.dataset)) == 1


def place(run, ortho, lon, lat, score, class_name="waste", ignored=False):
    square = Polygon.from_bbox((lon, lat, lon + 0.0001, lat + 0.0001))
    square.srid = 4326
    return Detection.objects.create(
        run=run,
        orthophoto=ortho,
        label=0,
        class_name=class_name,
        score=score,
        geometry=square,
        area_m2=80.0,
        pixel_box=[0, 0, 10, 10],
        ignored=ignored,
    )


def test_detections_are_filtered_by_area_class_and_score_and_paged(world):
    run, ortho = world.detection_run, world.orthophoto
    Detection.objects.filter(run=run).delete()
    near = place(run, ortho, 14.50, 46.00, 0.9)
    place(run, ortho, 14.50, 46.00, 0.4)
    place(run, ortho, 15.50, 46.50, 0.8, class_name="tyres")
    client = world.client("owner")
    url = f"/api/detection-runs/{run.pk}/detections/"
    everything = client.get(url).json()
    assert everything["count"] == 3 and [d["score"] for d in everything["results"]] == [0.9, 0.8, 0.4]
    assert client.get(url, {"bbox": "14.4,45.9,14.6,46.1"}).json()["count"] == 2
    assert client.get(url, {"bbox": "14.4,45.9,14.6,46.1", "min_score": 0.5}).json()["results"][0]["id"] == near.pk
    assert client.get(url, {"class": "tyres"}).json()["count"] == 1
    assert client.get(url, {"page_size": 1, "page": 2}).json()["results"][0]["score"] == 0.8
    geo = client.get(url, {"as": "geojson", "class": "waste"}).json()
    assert geo["type"] == "FeatureCollection" and geo["count"] == 2
    assert geo["features"][0]["geometry"]["type"] == "Polygon" and geo["features"][0]["properties"]["score"] == 0.9
    assert client.get(url, {"bbox": "1,2,3"}).status_code == 400
    assert client.get(url, {"min_score": "high"}).status_code == 400


def test_a_run_downloads_as_geopackage_geojson_and_csv(world, tmp_path):
    run, ortho = world.detection_run, world.orthophoto
    place(run, ortho, 14.50, 46.00, 0.7)
    client = world.client("owner")
    url = f"/api/detection-runs/{run.pk}/download/"
    rows = list(csv.DictReader(io.StringIO(client.get(url, {"as": "csv"}).content.decode())))
    assert len(rows) == 2 and {r["class"] for r in rows} == {world.model.class_names[0]}
    assert all(r["wkt"].startswith("POLYGON") and float(r["lon"]) > 0 for r in rows)
    geojson = json.loads(client.get(url, {"as": "geojson"}).content)
    assert len(geojson["features"]) == 2
    gpkg = tmp_path / "out.gpkg"
    response = client.get(url, {"as": "gpkg"})
    assert response["Content-Disposition"].endswith('.gpkg"')
    gpkg.write_bytes(response.content)
    info = subprocess.run(["ogrinfo", "-so", "-al", str(gpkg)], capture_output=True, text=True, check=True).stdout
    assert "Feature Count: 2" in info and "EPSG" in info and "4326" in info
    assert client.get(url, {"as": "shp"}).status_code == 400


def test_detections_in_an_ignore_zone_are_flagged_never_deleted(world):
    run, ortho = world.detection_run, world.orthophoto
    Detection.objects.filter(run=run).delete()
    inside = place(run, ortho, 14.50, 46.00, 0.9)
    place(run, ortho, 14.70, 46.20, 0.8)
    client = world.client("admin")
    square = [[[14.49, 45.99], [14.52, 45.99], [14.52, 46.02], [14.49, 46.02], [14.49, 45.99]]]
    created = client.post(
        "/api/ignore-zones/",
        {"dataset": world.dataset.pk, "name": "legal depot", "geometry": {"type": "Polygon", "coordinates": square}},
        format="json",
    )
    assert created.status_code == 201
    assert flag_ignored(run) == 1
    inside.refresh_from_db()
    assert (
        inside.ignored
        and inside.ignore_zone_id == created.json()["id"]
        and Detection.objects.filter(run=run).count() == 2
    )
    bad = client.post(
        "/api/ignore-zones/", {"dataset": world.dataset.pk, "name": "x", "geometry": {"type": "Point"}}, format="json"
    )
    assert bad.status_code == 400 and "no polygon" in bad.json()["message"]


def test_a_model_a_detection_run_used_is_not_deleted(world):
    world.detection_run  # noqa: B018 - made on first use
    response = world.client("owner").delete(f"/api/trained-models/{world.model.pk}/")
    assert response.status_code == 400 and "Delete those runs first" in response.json()["message"]
