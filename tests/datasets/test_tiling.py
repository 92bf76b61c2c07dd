"""An orthophoto cut into training tiles: a generated GeoTIFF in UTM 33N with known sites; the tiles' boxes, taken
back to map coordinates, match the sites clipped to each tile within one pixel; footprints are stored, and the
spatial split places every tile by them; bad input is refused with a clear reason and leaves nothing."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from django.contrib.gis.gdal import CoordTransform, SpatialReference
from django.contrib.gis.geos import Point, Polygon
from django.core.files.storage import default_storage

from core.errors import ApplicationError
from core.storage import stored_names
from datasets.import_execution import dataset_import_execute
from datasets.imports import stored_upload
from datasets.models import Annotation, Dataset, DatasetImage, DatasetImport
from datasets.splits import grid_cells, split_dataset
from datasets.tiling import TilingOptions, tile_orthophotos, windows
from tests.datasets.geo_files import tiff_without_crs, write_geotiff

pytestmark = pytest.mark.django_db
X0, Y0, PIXEL, W, H = 500_000.0, 5_100_000.0, 0.1, 2000, 1500  # 200 m x 150 m, north up
# Boxes in map metres (UTM 33N): (class, minx, miny, maxx, maxy)
RECTS = [
    ("waste", X0 + 10.0, Y0 - 30.0, X0 + 30.0, Y0 - 12.0),  # inside the first tile only
    ("tyres", X0 + 48.0, Y0 - 40.0, X0 + 56.0, Y0 - 20.0),  # across the tile edges at x = 44.8 m and 51.2 m
    ("waste", X0 + 150.0, Y0 - 80.0, X0 + 170.0, Y0 - 60.0),
]
TRIANGLE = [(X0 + 100.0, Y0 - 100.0), (X0 + 120.0, Y0 - 100.0), (X0 + 110.0, Y0 - 85.0), (X0 + 100.0, Y0 - 100.0)]


def pixels(band, y0, rows, width):
    """A textured ground with a nodata (all-zero) corner: x >= 1400 px and y >= 900 px."""
    ys, xs = np.mgrid[y0 : y0 + rows, 0:width]
    block = np.random.default_rng([band, y0]).integers(20, 240, (rows, width)).astype(np.uint8)
    block[(xs >= 1400) & (ys >= 900)] = 0
    return block


@pytest.fixture
def ortho(tmp_path) -> Path:
    return write_geotiff(
        tmp_path / "site 7.tif", srid=32633, origin=(X0, Y0), scale=(PIXEL, -PIXEL), size=(W, H), pixels=pixels
    )


def sites_geojson(srid=32633, extra=None) -> bytes:
    features = [
        {"type": "Feature", "properties": {"class": c}, "geometry": _rect(x1, y1, x2, y2)}
        for c, x1, y1, x2, y2 in RECTS
    ]
    features.append(
        {
            "type": "Feature",
            "properties": {"class": "rubble"},
            "geometry": {"type": "Polygon", "coordinates": [TRIANGLE]},
        }
    )
    features += extra or []
    doc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{srid}"}},
    }
    return json.dumps({**doc, "features": features}).encode()


def _rect(x1, y1, x2, y2):
    return {"type": "Polygon", "coordinates": [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]}


def window_of(image: DatasetImage) -> tuple[int, int]:
    found = re.search(r"_x(\d+)_y(\d+)\.jpg$", image.original_name)
    assert found is not None, image.original_name
    x, y = found.groups()
    return int(x), int(y)


def test_tiles_boxes_match_the_sites_clipped_to_each_tile_within_a_pixel(ortho):
    options = TilingOptions.checked(tile_size=512, overlap=64, min_box_share=0.3, background_ratio=1.0)
    report = tile_orthophotos(orthophotos=[ortho], annotations=sites_geojson(), options=options, dataset_name="tiled")
    dataset = report.dataset
    assert dataset.class_names() == ["waste", "tyres", "rubble"]  # in the order the file names them
    assert len(list(windows(W, H, 512, 64))) == 20 == report.stats["tiles"]
    assert report.stats["nodata_skipped"] == 1  # the window at (1488, 988) is all zero
    # The window at (896, 988) holds only the triangle's last rows (under the share): skipped, not background.
    assert (report.stats["cut_only_skipped"], report.stats["boxes_cut_dropped"]) == (1, 1)
    assert report.stats["with_sites"] + report.stats["background_kept"] == report.images == 18
    sites = [(c, Polygon.from_bbox((x1, y1, x2, y2))) for c, x1, y1, x2, y2 in RECTS]
    sites.append(("rubble", Polygon(TRIANGLE)))
    checked = 0
    for image in DatasetImage.objects.filter(dataset=dataset).order_by("id"):
        tx, ty = window_of(image)
        assert (image.width, image.height) == (512, 512)
        assert image.gsd_m == pytest.approx(PIXEL, rel=0.002)  # computed by PostgreSQL from the footprint
        cell = Polygon.from_bbox((X0 + tx * PIXEL, Y0 - (ty + 512) * PIXEL, X0 + (tx + 512) * PIXEL, Y0 - ty * PIXEL))
        expected = {}
        for name, site in sites:
            piece = site.intersection(cell)
            if not piece.empty and piece.area / site.area >= 0.3:
                expected.setdefault(name, []).append(piece.extent)
        boxes = Annotation.objects.filter(image=image).select_related("dataset_class")
        got = {}
        for box in boxes:  # back to map coordinates through the tile's window
            got.setdefault(box.dataset_class.name, []).append(
                (
                    X0 + (tx + box.x) * PIXEL,
                    Y0 - (ty + box.y + box.height) * PIXEL,
                    X0 + (tx + box.x + box.width) * PIXEL,
                    Y0 - (ty + box.y) * PIXEL,
                )
            )
        assert sorted(got) == sorted(expected), (image.original_name, got, expected)
        for name, extents in expected.items():
            for want, have in zip(sorted(extents), sorted(got[name]), strict=True):
                assert max(abs(a - b) for a, b in zip(want, have, strict=True)) <= PIXEL, (
                    image.original_name,
                    want,
                    have,
                )
                checked += 1
        # The footprint is the window's ground outline, in WGS 84.
        to_wgs84 = CoordTransform(SpatialReference(32633), SpatialReference(4326))
        corner = Point(X0 + tx * PIXEL, Y0 - ty * PIXEL, srid=32633)
        corner.transform(to_wgs84)
        assert max(abs(a - b) for a, b in zip(image.footprint.exterior_ring[0], corner.coords, strict=True)) <= 1e-6
    assert checked >= 5  # the first box, both pieces of the straddling one where kept, the triangle, the last box


def test_the_share_rule_and_the_background_ratio(ortho):
    # The tyres box spans x 48..56 m: the first window (to 51.2 m) holds 40 % of it, the next one 60 %.
    strict = tile_orthophotos(
        orthophotos=[ortho],
        annotations=sites_geojson(),
        options=TilingOptions.checked(tile_size=512, overlap=0, min_box_share=0.7, background_ratio=0.0),
        dataset_name="strict",
    )
    boxes = Annotation.objects.filter(image__dataset=strict.dataset, dataset_class__name="tyres")
    assert boxes.count() == 0 and strict.stats["boxes_cut_dropped"] >= 2
    assert strict.stats["background_kept"] == 0 and strict.stats["cut_only_skipped"] >= 1
    images = DatasetImage.objects.filter(dataset=strict.dataset)
    assert all(Annotation.objects.filter(image=i).exists() for i in images)  # no background at ratio 0


def test_the_spatial_split_places_every_tile_by_its_footprint(ortho):
    report = tile_orthophotos(
        orthophotos=[ortho],
        annotations=sites_geojson(),
        options=TilingOptions.checked(tile_size=256, overlap=0, background_ratio=1.0),
        dataset_name="for a split",
    )
    ids = list(DatasetImage.objects.filter(dataset=report.dataset).values_list("id", flat=True))
    with_boxes = set(Annotation.objects.filter(image__dataset=report.dataset).values_list("image_id", flat=True))
    split = split_dataset(
        report.dataset, images=ids, with_boxes=with_boxes, strategy="spatial", val_fraction=0.3, seed=1, cell_size_m=50
    )
    assert split.fallback_random == 0 and split.train and split.val  # every tile placed by its footprint
    cells = grid_cells(report.dataset, cell_size_m=50)
    assert set(cells) == set(ids)
    home = {image: cell for image, (cell, _) in cells.items()}
    assert not {home[i] for i in split.train} & {home[i] for i in split.val}


BAD = {
    "geotiff without crs": ("no coordinate reference system (CRS)", "orthophoto"),
    "annotations elsewhere": ("No annotated site overlaps the orthophoto", "annotations"),
    "corrupt geotiff": ("not a GeoTIFF the platform can read", "orthophoto"),
    "not json": ("not GeoJSON (not valid JSON", "annotations"),
    "not geojson": ("not a GeoJSON FeatureCollection", "annotations"),
    "no usable site": ("hold no usable site (feature 0: not a Polygon", "annotations"),
    "bad options": ("Invalid tiling options.", None),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_at_upload_with_its_reason_and_leaves_nothing(world, tmp_path, ortho, case, settings):
    annotations, options = sites_geojson(), {"tile_size": 512}
    if case == "geotiff without crs":
        ortho = tiff_without_crs(tmp_path / "nocrs.tif")
    elif case == "annotations elsewhere":
        annotations = sites_geojson(srid=3857)  # the same numbers in web Mercator: near the equator
    elif case == "corrupt geotiff":
        ortho = tmp_path / "corrupt.tif"
        ortho.write_bytes(b"II*\x00" + b"\x13" * 500)
    elif case == "not json":
        annotations = b"{not json"
    elif case == "not geojson":
        annotations = json.dumps({"type": "Feature", "geometry": None}).encode()
    elif case == "no usable site":
        annotations = json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"class": "w"},
                        "geometry": {"type": "Point", "coordinates": [0, 0]},
                    }
                ],
            }
        ).encode()
    elif case == "bad options":
        options = {"tile_size": 10, "overlap": -1}
    message, field = BAD[case]
    imports_before = DatasetImport.objects.count()
    kept = Path(default_storage.path("imports"))
    left_before = set(kept.rglob("*")) if kept.exists() else set()
    response = world.client("admin").post(
        "/api/datasets/tile-orthophoto/",
        {
            "orthophoto": [_file(ortho)],
            "annotations": _file(annotations, "sites.geojson"),
            "dataset_name": "tiles",
            **options,
        },
        format="multipart",
    )
    assert response.status_code == 400, response.json()
    assert message in response.json()["message"], response.json()
    if field:
        assert field in response.json()["errors"]
    assert not Dataset.objects.filter(name="tiles").exists() and DatasetImport.objects.count() == imports_before
    assert (set(kept.rglob("*")) if kept.exists() else set()) == left_before


def _file(source, name=None):
    data = source.read_bytes() if isinstance(source, Path) else source
    upload = io.BytesIO(data)
    upload.name = name or source.name
    return upload


def test_the_api_queues_a_tiling_that_the_worker_service_completes(world, ortho):
    response = world.client("admin").post(
        "/api/datasets/tile-orthophoto/",
        {
            "orthophoto": [_file(ortho)],
            "annotations": _file(sites_geojson(), "sites.geojson"),
            "dataset_name": "from the api",
            "tile_size": 512,
            "overlap": 64,
            "background_ratio": 0.5,
        },
        format="multipart",
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["kind"] == "orthophoto" and body["archive_name"] == "site 7.tif" and body["status"] == "queued"
    job = DatasetImport.objects.get(pk=body["id"])
    assert job.parameters["options"]["tile_size"] == 512 and job.parameters["names"] == ["site 7.tif"]
    dataset_import_execute(import_id=job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error_message
    assert job.images_imported > 0 and job.stats["tiles"] == 20 and job.dataset.name == "from the api"
    assert (
        DatasetImage.objects.filter(dataset=job.dataset, original_name__startswith="site 7_x").count()
        == job.images_imported
    )
    assert not stored_names(stored_upload(job.key))
    detail = world.client("admin").get(f"/api/dataset-imports/{job.pk}/").json()
    assert detail["stats"]["tiles"] == 20 and detail["percent"] == 100.0


def test_a_tiling_into_an_existing_dataset_matches_classes_by_name(ortho):
    from datasets.services import dataset_create

    dataset = dataset_create(name="existing", class_names=["Rubble", "waste"])
    with pytest.raises(ApplicationError, match="has no class 'tyres'"):
        tile_orthophotos(orthophotos=[ortho], annotations=sites_geojson(), options=TilingOptions(), dataset=dataset)
    assert dataset.images.count() == 0
    report = tile_orthophotos(
        orthophotos=[ortho], annotations=sites_geojson(), options=TilingOptions(), dataset=dataset, add_classes=True
    )
    assert report.classes_added == ["tyres"] and dataset.class_names() == ["Rubble", "waste", "tyres"]
    names = set(Annotation.objects.filter(image__dataset=dataset).values_list("dataset_class__name", flat=True))
    assert names == {"Rubble", "waste", "tyres"}


def test_the_map_draws_the_boxes_where_the_sites_are(world, ortho):
    from datasets.selectors import boxes_on_map

    report = tile_orthophotos(
        orthophotos=[ortho],
        annotations=sites_geojson(),
        options=TilingOptions.checked(tile_size=512, overlap=64, background_ratio=0.0),
        dataset_name="mapped",
    )
    to_wgs84 = CoordTransform(SpatialReference(32633), SpatialReference(4326))
    _, x1, y1, x2, y2 = RECTS[0]  # whole inside the first tile
    site = Polygon.from_bbox((x1, y1, x2, y2))
    site.srid = 32633
    site.transform(to_wgs84)
    drawn = [b for b in boxes_on_map(report.dataset, limit=100) if b["class"] == "waste"]
    first = min(drawn, key=lambda b: b["ring"][0][0])
    # Box corners (top-left first) against the site's corners (from its north-west one).
    want = [site.exterior_ring[i] for i in (1, 2, 3, 0)]
    assert all(
        max(abs(a - b) for a, b in zip(p, q, strict=True)) <= 2e-6 for p, q in zip(first["ring"][:4], want, strict=True)
    )
    page = world.staff_client("admin").get(f"/admin/datasets/dataset/{report.dataset.pk}/change/").content.decode()
    assert f"{len(boxes_on_map(report.dataset, limit=10000))} boxes on the map" in page and '"ring": [[' in page


def test_the_admin_tiles_an_upload_and_shows_the_tiling(world, ortho):
    admin = world.staff_client("admin")
    assert 'id="tile-orthophoto"' in admin.get("/admin/datasets/dataset/").content.decode()
    form = {"annotations": _file(sites_geojson(), "sites.geojson"), "dataset_name": "admin tiles", "tile_size": 512}
    form.update(overlap=64, min_box_share=0.3, background_ratio=0.2, class_property="class", orthophoto=[_file(ortho)])
    response = admin.post("/admin/datasets/dataset/tile-orthophoto/", form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = DatasetImport.objects.get(new_dataset_name="admin tiles")
    dataset_import_execute(import_id=job.pk)
    page = admin.get(response["Location"]).content.decode()
    assert "Orthophoto tiling" in page and "20 windows:" in page and "20 of 20 windows" in page
    assert 'data-status="succeeded"' in page
    refused = admin.post(
        "/admin/datasets/dataset/tile-orthophoto/",
        {
            **form,
            "dataset_name": "admin tiles 2",
            "orthophoto": [_file(b"garbage", "x.tif")],
            "annotations": _file(sites_geojson(), "s.geojson"),
        },
    )
    assert refused.status_code == 200, refused.status_code
    assert "x.tif: not a GeoTIFF the platform can read" in refused.content.decode(), re.findall(
        r"errorlist.{0,300}", refused.content.decode()
    )
