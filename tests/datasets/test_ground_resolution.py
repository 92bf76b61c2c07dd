"""Ground resolution: PostgreSQL computes each image's ground sample distance from its footprint (whatever set it),
the dataset shows its range and median (admin, API), the export carries it, a registered model records the one its
network saw, and a dry run reports the boxes as the network will see them against the preset's anchors."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.gis.gdal import CoordTransform, SpatialReference
from django.contrib.gis.geos import Polygon
from django.core.management import call_command

from datasets.coco_export import build_coco, ground_resolution_of
from datasets.models import Annotation, DatasetImage
from datasets.selectors import ground_resolution
from engine.pipelines import trained_gsd
from tests.world import register_model
from training.models import TrainingRun
from training.selectors import box_sizes_seen
from training.services import training_run_create

UTM33 = 32633


def footprint(width_px: int, height_px: int, gsd: float, x0: float = 500_000.0, y0: float = 5_100_000.0) -> Polygon:
    """A north-up footprint of ``gsd`` metres per pixel near the central meridian of UTM 33 (scale 0.9996), in
    WGS 84, its ring from the top-left corner clockwise (as imports store it)."""
    w, h = width_px * gsd, height_px * gsd
    ring = [(x0, y0), (x0 + w, y0), (x0 + w, y0 - h), (x0, y0 - h), (x0, y0)]
    polygon = Polygon(ring, srid=UTM33)
    polygon.transform(CoordTransform(SpatialReference(UTM33), SpatialReference(4326)))
    polygon.srid = 4326
    return polygon


@pytest.fixture
def georeferenced(make_dataset):
    """Four images of 64 x 48 px: three with footprints at 3, 5 and 10 cm per pixel, one without."""
    dataset = make_dataset(name="gsd", images=4)
    images = list(DatasetImage.objects.filter(dataset=dataset).order_by("id"))
    for image, gsd in zip(images, (0.03, 0.05, 0.10), strict=False):
        # as a review or a tiling would set it: a plain update, no Python computes the resolution
        DatasetImage.objects.filter(pk=image.pk).update(footprint=footprint(image.width, image.height, gsd))
    return dataset


def test_postgres_computes_the_ground_sample_distance_of_each_footprint(georeferenced):
    gsds = list(DatasetImage.objects.filter(dataset=georeferenced).order_by("id").values_list("gsd_m", flat=True))
    assert gsds[3] is None  # no footprint, no resolution
    for got, want in zip(gsds[:3], (0.03, 0.05, 0.10), strict=False):
        assert got == pytest.approx(want, rel=0.002)  # the spheroid against UTM's 0.9996 scale
    summary = ground_resolution(georeferenced)
    assert summary["images"] == 3
    assert (summary["min_m"], summary["median_m"], summary["max_m"]) == pytest.approx((0.03, 0.05, 0.10), rel=0.002)


def test_the_dataset_shows_its_ground_resolution_in_the_admin_and_the_api(world, georeferenced):
    client = world.client("admin")
    detail = client.get(f"/api/datasets/{georeferenced.pk}/").json()
    assert detail["ground_resolution"]["images"] == 3
    assert detail["ground_resolution"]["median_m"] == pytest.approx(0.05, rel=0.002)
    listed = client.get("/api/datasets/").json()["results"]
    assert "ground_resolution" not in listed[0]  # the list stays one query per page
    images = client.get(f"/api/datasets/{georeferenced.pk}/images/").json()["results"]
    assert sorted(i["gsd_m"] is None for i in images) == [False, False, False, True]
    plain = client.get(f"/api/datasets/{world.dataset.pk}/").json()
    assert plain["ground_resolution"] is None
    page = world.staff_client("admin").get(f"/admin/datasets/dataset/{georeferenced.pk}/change/").content.decode()
    assert "3.0 to 10.0 cm per pixel, median 5.0 cm (3 of 4 images" in page


def test_the_export_carries_each_images_resolution_and_the_splits(georeferenced):
    train, val = build_coco(georeferenced, val_fraction=0.25, seed=0, check_files=False)
    docs = train["images"] + val["images"]
    assert sorted(round(i["gsd"], 3) for i in docs if "gsd" in i) == [0.03, 0.05, 0.1]
    assert sum("gsd" not in i for i in docs) == 1
    summary = ground_resolution_of({"images": docs})
    assert summary["images"] == 3 and summary["median_m"] == pytest.approx(0.05, rel=0.002)
    assert summary["longest_side_median_m"] == pytest.approx(64 * 0.05, rel=0.002)


def test_a_registered_model_records_the_resolution_its_network_saw(world, georeferenced, tmp_path):
    run = training_run_create(dataset=georeferenced, created_by=world.users["admin"], parameters={"epochs": 1})
    train, _ = build_coco(georeferenced, val_fraction=0.25, seed=0, check_files=False)
    resolution = ground_resolution_of(train)
    gsd = trained_gsd(run.parameters, resolution)  # what the worker passes at registration
    assert gsd == pytest.approx(resolution["longest_side_median_m"] / 256, abs=1e-6)  # whole images over 256 px
    model = register_model(run, tmp_path, gsd_m=gsd)
    card = world.client("admin").get(f"/api/trained-models/{model.pk}/card/").json()
    assert card["ground_resolution_m"] == pytest.approx(gsd)
    assert world.client("admin").get(f"/api/trained-models/{model.pk}/").json()["gsd_m"] == pytest.approx(gsd)
    markdown = world.client("admin").get(f"/api/trained-models/{model.pk}/download/", {"artifact": "card"})
    assert f"Ground resolution trained at: {gsd * 100:.2f} cm per pixel" in markdown.content.decode()
    page = world.staff_client("admin").get(f"/admin/models_registry/trainedmodel/{model.pk}/change/")
    assert f"{gsd:g}"[:6] in page.content.decode()
    unknown = register_model(
        training_run_create(dataset=world.dataset, created_by=world.users["admin"], parameters={"epochs": 1}),
        tmp_path,
    )
    assert (
        unknown.gsd_m is None
        and "unknown (no training image had a footprint)"
        in world.client("admin")
        .get(f"/api/trained-models/{unknown.pk}/download/", {"artifact": "card"})
        .content.decode()
    )


def test_a_dry_run_shows_the_pipeline_and_the_boxes_as_the_network_sees_them(world, georeferenced):
    image = DatasetImage.objects.filter(dataset=georeferenced, gsd_m__isnull=False).order_by("gsd_m").first()
    cls = georeferenced.classes.first()
    Annotation.objects.create(image=image, dataset_class=cls, x=20, y=10, width=30, height=30)  # at 3 cm
    whole = box_sizes_seen(georeferenced, {"image_size": 256, "resize": "whole"})
    assert sorted(whole)[-1] == pytest.approx((30 * 4, 30 * 4))  # 64 px images enlarged to 256
    crops = box_sizes_seen(georeferenced, {"image_size": 256, "resize": "crops", "target_gsd": 0.06})
    assert any(c == pytest.approx((15, 15), rel=0.01) for c in crops)  # 3 cm resampled to 6 cm: half the size
    assert any(c == pytest.approx((10 / 0.6, 12 / 0.6), rel=0.01) for c in crops)  # 10 cm to 6 cm: enlarged
    assert (10, 12) in crops  # the image without a footprint as it is
    ids = Annotation.objects.filter(image__dataset=georeferenced).values_list("id", flat=True)
    sampled = box_sizes_seen(georeferenced, {"image_size": 256, "resize": "whole"}, limit=2)  # every 2nd id
    assert len(sampled) == sum(1 for i in ids if i % 2 == 0) < len(ids)

    out = io.StringIO()
    call_command(
        "train",
        "--dataset",
        str(georeferenced.pk),
        "--resize",
        "crops",
        "--target-gsd",
        "0.06",
        "--dry-run",
        "--user",
        "admin",
        stdout=out,
    )
    text = out.getvalue()
    assert "  - resampled to 6 cm per pixel" in text and "Nothing queued." in text
    assert "Boxes as the network sees them: 5," in text and "under 16 px" in text
    assert "Anchors 32 to" in text and "boxes overlap one at IoU 0.5 or more" in text
    assert not TrainingRun.objects.filter(dataset=georeferenced).exists()

    answer = world.client("admin").post(
        "/api/training-runs/",
        {"dataset": georeferenced.pk, "dry_run": True, "parameters": {"resize": "crops"}},
        format="json",
    )
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["pipeline"][0] == "kept at full resolution" and body["boxes"]["boxes"] == 5
    assert 0 <= body["boxes"]["anchors"]["matched"] <= 1
    json.dumps(body)  # plain data
