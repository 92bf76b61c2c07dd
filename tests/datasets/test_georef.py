"""Georeferencing read from the files on every import: GeoTIFF footprints (EPSG:3857, a UTM zone, a rotated
geotransform) and locations in WGS 84 within 1e-6 degrees, EXIF GPS position, altitude and capture time (within a
second), reported per image; files without it import as before."""

from __future__ import annotations

import io
import json
import math
import zipfile
from datetime import UTC, datetime

import pytest
from django.contrib.gis.gdal import CoordTransform, SpatialReference
from django.contrib.gis.geos import Point

from datasets.coco_import import import_coco, import_coco_zip
from datasets.models import DatasetImage
from datasets.services import dataset_create, dataset_image_create
from datasets.zips import ZipLimits, check_zip
from tests.conftest import jpeg_bytes
from tests.datasets.geo_files import exif_jpeg, tiff_without_crs, write_geotiff

pytestmark = pytest.mark.django_db
R = 6378137.0  # the sphere of web Mercator


def mercator_to_wgs84(x: float, y: float) -> tuple[float, float]:
    """Web Mercator's inverse, written out (not GDAL's): the tests' own expectation."""
    return math.degrees(x / R), math.degrees(2 * math.atan(math.exp(y / R)) - math.pi / 2)


def close(a, b, tolerance=1e-6) -> bool:
    return all(abs(p - q) <= tolerance for p, q in zip(a, b, strict=True))


@pytest.fixture
def dataset():
    return dataset_create(name="geo", class_names=["waste"])


def test_a_geotiff_in_web_mercator_gets_its_footprint_and_centre_in_wgs84(dataset, tmp_path):
    x0, y0, pixel = 1_613_000.0, 5_810_000.0, 0.5
    path = write_geotiff(tmp_path / "m.tif", srid=3857, origin=(x0, y0), scale=(pixel, -pixel), size=(64, 48))
    image = dataset_image_create(dataset=dataset, content=path.read_bytes(), original_name="m.tif")
    image.refresh_from_db()
    expected = [mercator_to_wgs84(x0 + px * pixel, y0 - py * pixel) for px, py in ((0, 0), (64, 0), (64, 48), (0, 48))]
    ring = image.footprint.exterior_ring.coords
    assert len(ring) == 5 and all(close(got, want) for got, want in zip(ring[:4], expected, strict=True)), ring
    assert close(image.location.coords, mercator_to_wgs84(x0 + 32 * pixel, y0 - 24 * pixel))
    assert image.georeference.found == ["GeoTIFF footprint (EPSG:3857)"]


def test_a_rotated_geotiff_in_a_utm_zone_keeps_its_rotation(dataset, tmp_path):
    """Geotransform rotation terms (a north-up tile would be an axis-aligned rectangle in UTM; this one is not)."""
    x0, y0, (a, b, d, e) = 500_000.0, 5_100_000.0, (0.4, 0.1, 0.05, -0.4)
    path = write_geotiff(tmp_path / "u.tif", srid=32633, origin=(x0, y0), scale=(a, e), skew=(b, d), size=(80, 60))
    image = dataset_image_create(dataset=dataset, content=path.read_bytes(), original_name="u.tif")
    utm_to_wgs84 = CoordTransform(SpatialReference(32633), SpatialReference(4326))
    expected = []
    for px, py in ((0, 0), (80, 0), (80, 60), (0, 60)):
        corner = Point(x0 + px * a + py * b, y0 + px * d + py * e, srid=32633)  # the affine map, written out
        corner.transform(utm_to_wgs84)
        expected.append(corner.coords)
    ring = DatasetImage.objects.get(pk=image.pk).footprint.exterior_ring.coords
    assert all(close(got, want) for got, want in zip(ring[:4], expected, strict=True)), (ring, expected)
    assert close(ring[0], (15.0, 46.0535743697774))  # UTM 33N's central meridian at 5,100 km north
    centre = Point(x0 + 40 * a + 30 * b, y0 + 40 * d + 30 * e, srid=32633)
    centre.transform(utm_to_wgs84)
    assert close(DatasetImage.objects.get(pk=image.pk).location.coords, centre.coords)


def test_exif_gps_position_altitude_and_capture_time_with_offset(dataset):
    content = exif_jpeg(
        lat=46.0512345, lon=-14.5054321, altitude=312.5, taken=datetime(2026, 6, 1, 11, 30, 5), offset="+02:00"
    )
    image = dataset_image_create(dataset=dataset, content=content, original_name="drone.jpg")
    image.refresh_from_db()
    assert close(image.location.coords, (-14.5054321, 46.0512345)) and image.footprint is None
    assert image.altitude_m == pytest.approx(312.5)
    assert abs((image.captured_at - datetime(2026, 6, 1, 9, 30, 5, tzinfo=UTC)).total_seconds()) < 1


@pytest.mark.parametrize(
    "extra, expected, note",
    [
        ({"gps_utc": datetime(2026, 6, 1, 9, 30, 7)}, datetime(2026, 6, 1, 9, 30, 7, tzinfo=UTC), "GPS capture time"),
        ({}, datetime(2026, 6, 1, 11, 30, 5, tzinfo=UTC), "no offset in the file: taken as UTC"),
    ],
)
def test_a_capture_time_without_offset_takes_the_gps_clock_else_says_it_assumed_utc(dataset, extra, expected, note):
    content = exif_jpeg(lat=46.0, lon=14.5, taken=datetime(2026, 6, 1, 11, 30, 5), **extra)
    image = dataset_image_create(dataset=dataset, content=content)
    assert abs((image.captured_at - expected).total_seconds()) < 1
    assert any(note in found for found in image.georeference.found)


def test_files_without_georeferencing_import_as_before_and_a_crs_less_tiff_is_noted(dataset, tmp_path):
    plain = dataset_image_create(dataset=dataset, content=jpeg_bytes())
    assert (plain.location, plain.footprint, plain.captured_at, plain.georeference.found) == (None, None, None, [])
    no_crs = dataset_image_create(dataset=dataset, content=tiff_without_crs(tmp_path / "n.tif").read_bytes())
    assert no_crs.footprint is None and no_crs.location is None
    assert no_crs.georeference.problems == [
        "GeoTIFF geotransform without a coordinate reference system: footprint not set"
    ]


def test_the_import_report_says_what_each_file_told(tmp_path):
    write_geotiff(tmp_path / "ortho_tile.tif", srid=3857, origin=(1_613_000.0, 5_810_000.0), scale=(0.5, -0.5))
    (tmp_path / "drone.jpg").write_bytes(
        exif_jpeg(lat=46.05, lon=14.5, taken=datetime(2026, 6, 1, 9, 0), offset="+00:00")
    )
    (tmp_path / "plain.jpg").write_bytes(jpeg_bytes(colour=(1, 90, 200)))
    doc = {
        "categories": [{"id": 1, "name": "waste"}],
        "images": [{"id": i, "file_name": n} for i, n in enumerate(["ortho_tile.tif", "drone.jpg", "plain.jpg"], 1)],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    report = import_coco(json_path=tmp_path / "coco.json", images_dir=tmp_path, dataset_name="from a folder")
    assert dict(report.georeferenced) == {
        "image 1 ('ortho_tile.tif')": "GeoTIFF footprint (EPSG:3857)",
        "image 2 ('drone.jpg')": "EXIF GPS position; EXIF capture time",
    }
    placed = DatasetImage.objects.filter(dataset=report.dataset).exclude(location=None)
    assert placed.count() == 2 and report.dataset.stats.extent is not None

    archive = tmp_path / "geo.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("annotations.json", json.dumps(doc))
        for name in ("ortho_tile.tif", "drone.jpg", "plain.jpg"):
            out.write(tmp_path / name, f"images/{name}")
    zipped = import_coco_zip(
        archive_path=archive, contents=check_zip(archive, ZipLimits(100, 2**30, 100)), dataset_name="zip"
    )
    assert zipped.georeferenced == report.georeferenced


def test_the_api_upload_reports_what_the_file_told(world, dataset):
    upload = io.BytesIO(exif_jpeg(lat=46.05, lon=14.5, altitude=280.0))
    upload.name = "drone.jpg"
    response = world.client("admin").post(f"/api/datasets/{dataset.pk}/images/", {"image": upload}, format="multipart")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["georeference"] == {"found": ["EXIF GPS position", "EXIF GPS altitude"], "problems": []}
    assert close(body["location"]["coordinates"], (14.5, 46.05)) and body["altitude_m"] == pytest.approx(280.0)
    # A place given with the upload wins over the file's.
    given = io.BytesIO(exif_jpeg(lat=46.05, lon=14.5, colour=(3, 3, 3)))
    given.name = "b.jpg"
    point = json.dumps({"type": "Point", "coordinates": [10.0, 45.0]})
    body = (
        world.client("admin")
        .post(f"/api/datasets/{dataset.pk}/images/", {"image": given, "location": point}, format="multipart")
        .json()
    )
    assert body["location"]["coordinates"] == [10.0, 45.0]


def test_import_coco_says_how_many_files_told_their_place(tmp_path):
    from io import StringIO

    from django.core.management import call_command

    from core.commands import ensure_operator

    ensure_operator()
    (tmp_path / "a.jpg").write_bytes(exif_jpeg(lat=46.0, lon=14.5))
    (tmp_path / "b.jpg").write_bytes(exif_jpeg(lat=46.1, lon=14.6, colour=(9, 9, 200)))
    doc = {
        "categories": [{"id": 1, "name": "w"}],
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
    }
    (tmp_path / "c.json").write_text(json.dumps(doc))
    out = StringIO()
    call_command(
        "import_coco", str(tmp_path / "c.json"), str(tmp_path), "--name", "placed", stdout=out, stderr=StringIO()
    )
    assert "2 image(s) placed or dated by their files (EXIF GPS position: 2)" in out.getvalue()
