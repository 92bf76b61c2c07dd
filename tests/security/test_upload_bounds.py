"""Bounds wherever a user controls a size: an orthophoto declaring 2,000,000 px per side, a tiling of millions of
windows, a GeoJSON of a million-vertex polygon, too many features or bytes, a zip declaring more members than
allowed, a COCO file past its cap. Each is refused at upload, within a second, naming its limit and value, and
leaves nothing behind; the windows are made lazily and the sites found through an index."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import pytest
from django.contrib.gis.gdal import GDALRaster

from core.errors import ApplicationError
from datasets import zips
from datasets.grid import SiteIndex
from datasets.models import Dataset, DatasetImport
from datasets.sites import read_annotations
from engine.geometry import window_count, windows
from tests.datasets.test_tiling import sites_geojson
from tests.datasets.zip_layouts import LAYOUTS
from tests.security.test_gdal_reads import upload_folders

pytestmark = pytest.mark.django_db


def sparse_geotiff(path: Path, size: int) -> Path:
    """A GeoTIFF of ``size`` x ``size`` px whose tiles are all absent (a few MB on disk, any declared size)."""
    GDALRaster(
        {
            "driver": "GTiff",
            "name": str(path),
            "width": size,
            "height": size,
            "srid": 32633,
            "origin": [500_000.0, 5_100_000.0],
            "scale": [0.1, -0.1],
            "datatype": 1,
            "nr_of_bands": 1,
            "papsz_options": {
                "sparse_ok": "yes",
                "tiled": "yes",
                "blockxsize": 8192,
                "blockysize": 8192,
                "bigtiff": "yes",
            },
        }
    )
    return path


def tile(admin_api, ortho: Path, sites: bytes, **options):
    annotations = io.BytesIO(sites)
    annotations.name = "sites.geojson"
    data = io.BytesIO(ortho.read_bytes())
    data.name = "huge.tif"
    before = upload_folders()
    started = time.monotonic()
    response = admin_api.post(
        "/api/datasets/tile-orthophoto/",
        {"orthophoto": [data], "annotations": annotations, "dataset_name": "bounded", **options},
        format="multipart",
    )
    response.folders_before = before  # other tests may leave their uploads in the session's tree
    return response, time.monotonic() - started


def assert_refused_cleanly(response, elapsed: float, *needles: str):
    assert response.status_code == 400, response.content
    message = response.json()["message"]
    for needle in needles:
        assert needle in message, message
    assert elapsed < 1.0, f"refused after {elapsed:.2f} s"
    assert not DatasetImport.objects.exists() and not Dataset.objects.filter(name="bounded").exists()
    assert upload_folders() == response.folders_before


def test_an_orthophoto_of_2_000_000_px_per_side_is_refused_at_upload(admin_api, tmp_path):
    ortho = sparse_geotiff(tmp_path / "huge.tif", 2_000_000)
    assert ortho.stat().st_size < 4 * 2**20
    response, elapsed = tile(admin_api, ortho, sites_geojson(), tile_size=64, overlap=32)
    assert_refused_cleanly(
        response, elapsed, "2,000,000 x 2,000,000", "the limit is 10,000,000,000", "DUMPSITE_ORTHOPHOTO_MAX_PIXELS"
    )


def test_the_200_byte_vrt_declaring_2_000_000_px_per_side_is_refused_at_upload(admin_api, tmp_path):
    vrt = tmp_path / "huge.tif"
    vrt.write_text(
        '<VRTDataset rasterXSize="2000000" rasterYSize="2000000"><SRS>EPSG:32633</SRS>'
        "<GeoTransform>500000, 0.1, 0, 5100000, 0, -0.1</GeoTransform>"
        '<VRTRasterBand dataType="Byte" band="1"/></VRTDataset>'
    )
    assert vrt.stat().st_size < 300
    response, elapsed = tile(admin_api, vrt, sites_geojson(), tile_size=64, overlap=32)
    assert_refused_cleanly(response, elapsed, "huge.tif: not a GeoTIFF")


def test_a_tiling_of_millions_of_windows_is_refused_before_one_is_made(admin_api, tmp_path):
    ortho = sparse_geotiff(tmp_path / "wide.tif", 40_000)  # 1.6e9 px: under the pixel limit
    response, elapsed = tile(admin_api, ortho, sites_geojson(), tile_size=64, overlap=32)
    assert_refused_cleanly(
        response, elapsed, "1,560,001 tiles", "the limit is 1,000,000", "DUMPSITE_TILING_MAX_WINDOWS"
    )


def test_a_million_vertex_polygon_is_refused_at_upload(admin_api, tmp_path):
    from tests.datasets.geo_files import write_geotiff

    ortho = write_geotiff(tmp_path / "small.tif", srid=32633, origin=(500_000.0, 5_100_000.0), scale=(0.1, -0.1))
    ring = [[500_000 + i % 5, 5_099_999 - i % 3] for i in range(1_000_000)] + [[500_000, 5_099_999]]
    doc = json.loads(sites_geojson())
    doc["features"].append(
        {"type": "Feature", "properties": {"class": "waste"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    )
    response, elapsed = tile(admin_api, ortho, json.dumps(doc, separators=(",", ":")).encode())
    assert_refused_cleanly(response, elapsed, "more than 500,000", "DUMPSITE_GEOJSON_MAX_VERTICES")
    # Under the file's limit, a polygon is refused for its own: a site has at most 10,000 vertices.
    doc["features"][-1]["geometry"]["coordinates"] = [ring[:20_000] + [ring[0]]]
    started = time.monotonic()
    with pytest.raises(ApplicationError, match=r"feature 4 with vertices: more than 10,000.*SITE_VERTICES"):
        read_annotations(json.dumps(doc).encode())
    assert time.monotonic() - started < 1.0


def test_geojson_bytes_features_and_total_vertices_are_capped(settings):
    doc = json.loads(sites_geojson())
    settings.DUMPSITE_GEOJSON_MAX_FEATURES = 3
    with pytest.raises(ApplicationError, match=r"features: 4; the limit is 3 \(DUMPSITE_GEOJSON_MAX_FEATURES\)"):
        read_annotations(json.dumps(doc).encode())
    settings.DUMPSITE_GEOJSON_MAX_FEATURES = 100
    settings.DUMPSITE_GEOJSON_MAX_VERTICES = 12  # the file's four sites have 5 + 5 + 5 + 4 positions
    with pytest.raises(ApplicationError, match=r"the limit is 12 \(DUMPSITE_GEOJSON_MAX_VERTICES\)"):
        read_annotations(json.dumps(doc).encode())  # counted site by site once parsed
    settings.DUMPSITE_GEOJSON_MAX_FEATURES = 4
    settings.DUMPSITE_GEOJSON_MAX_VERTICES = 14
    with pytest.raises(ApplicationError, match=r"the limit is 14 \(DUMPSITE_GEOJSON_MAX_VERTICES\)"):
        read_annotations(json.dumps(doc).encode())  # 19 positions > 14 + 4: refused before parsing
    settings.DUMPSITE_GEOJSON_MAX_FEATURES = 100
    settings.DUMPSITE_GEOJSON_MAX_VERTICES = 19
    assert len(read_annotations(json.dumps(doc).encode()).sites) == 4
    settings.DUMPSITE_GEOJSON_MAX_BYTES = 100
    with pytest.raises(ApplicationError, match=r"DUMPSITE_GEOJSON_MAX_BYTES"):
        read_annotations(json.dumps(doc).encode())


def test_windows_are_lazy_and_counted_without_being_made():
    huge = windows(2_000_000, 2_000_000, 64, 32)
    assert next(huge) == (0, 0, 64, 64) and next(huge) == (32, 0, 64, 64)
    assert window_count(2_000_000, 2_000_000, 64, 32) == 62_499**2
    for width, height, size, overlap in [(2000, 1500, 512, 64), (100, 50, 64, 0), (64, 64, 64, 32), (30, 20, 64, 8)]:
        made = list(windows(width, height, size, overlap))
        assert len(made) == window_count(width, height, size, overlap)
        assert made[-1][0] + made[-1][2] == width and made[-1][1] + made[-1][3] == height


def test_the_site_index_finds_exactly_the_sites_a_window_meets():
    import random

    rng = random.Random(7)
    boxes = []
    for _ in range(300):
        x, y = rng.uniform(0, 5000), rng.uniform(0, 5000)
        boxes.append((x, y, x + rng.uniform(1, 400), y + rng.uniform(1, 400)))
    boxes.append((-10, -10, 6000, 6000))  # one site over everything: kept apart, met by every window
    index = SiteIndex(boxes, cell=256)
    for window in windows(5000, 5000, 512, 64):
        x, y, w, h = window
        brute = [i for i, (x1, y1, x2, y2) in enumerate(boxes) if x1 <= x + w and x2 >= x and y1 <= y + h and y2 >= y]
        assert index.candidates(window) == brute


def test_a_zip_declaring_too_many_members_is_refused_before_its_directory_is_read(tmp_path, settings, monkeypatch):
    archive = LAYOUTS["plain COCO"](tmp_path / "plain.zip")
    settings.DUMPSITE_ZIP_MAX_MEMBERS = 2

    def no_directory(*args, **kwargs):
        raise AssertionError("the central directory was read")

    monkeypatch.setattr(zips.zipfile, "ZipFile", no_directory)
    with pytest.raises(ApplicationError, match=r"The archive has 4 members; at most 2"):
        zips.check_zip(archive, zips.ZipLimits.from_settings())


def test_a_coco_file_past_its_cap_is_refused_at_upload(admin_api, tmp_path, settings):
    archive = LAYOUTS["plain COCO"](tmp_path / "plain.zip")
    with zipfile.ZipFile(archive) as zf:
        size = zf.getinfo("annotations.json").file_size
    settings.DUMPSITE_COCO_MAX_JSON_BYTES = size - 1
    with open(archive, "rb") as fh:
        response = admin_api.post(
            "/api/datasets/import/", {"archive": fh, "dataset_name": "bounded"}, format="multipart"
        )
    assert response.status_code == 400, response.content
    assert f"annotations.json is {size:,} bytes" in response.json()["message"]
    assert "DUMPSITE_COCO_MAX_JSON_BYTES" in response.json()["message"]
    assert not DatasetImport.objects.exists()
