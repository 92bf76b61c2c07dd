"""Dataset counts and extent are kept by database triggers through every kind of write, and match a recount."""

from __future__ import annotations

import pytest
from django.contrib.gis.db.models import Collect, GeometryField
from django.contrib.gis.db.models.functions import Envelope
from django.contrib.gis.geos import Point, Polygon
from django.db import connection
from django.db.models.functions import Coalesce
from django.test.utils import CaptureQueriesContext

from datasets.models import Annotation, Dataset, DatasetImage, DatasetStats
from datasets.services import (
    annotation_build,
    annotation_create,
    annotations_bulk_create,
    dataset_create,
    dataset_image_create,
)
from tests.conftest import jpeg_bytes


def square(lon: float, lat: float, size: float = 0.01) -> Polygon:
    return Polygon(((lon, lat), (lon + size, lat), (lon + size, lat + size), (lon, lat + size), (lon, lat)), srid=4326)


def recount(dataset: Dataset) -> tuple[int, int, tuple | None]:
    """What the stats must say, counted the slow way."""
    images = DatasetImage.objects.filter(dataset=dataset)
    extent = images.aggregate(
        e=Envelope(Collect(Coalesce("footprint", "location", output_field=GeometryField(srid=4326))))
    )["e"]
    return (
        images.count(),
        Annotation.objects.filter(image__dataset=dataset).count(),
        extent.extent if extent is not None else None,
    )


def stats(dataset: Dataset) -> tuple[int, int, tuple | None]:
    row = DatasetStats.objects.get(dataset=dataset)
    return row.image_count, row.annotation_count, row.extent.extent if row.extent is not None else None


@pytest.fixture
def placed(db):
    """A dataset of three placed images (two footprints, one location only) with 1, 2 and 3 boxes."""
    dataset = dataset_create(name="placed", class_names=["waste", "tyres"])
    cls = dataset.classes.first()
    places = [
        dict(footprint=square(14.0, 50.0)),
        dict(footprint=square(14.5, 50.5)),
        dict(location=Point(13.0, 49.0, srid=4326)),
    ]
    for i, place in enumerate(places):
        image = dataset_image_create(
            dataset=dataset, content=jpeg_bytes(64, 48, (i * 50, 90, 90)), original_name=f"p{i}.jpg", **place
        )
        for _ in range(i + 1):
            annotation_create(image=image, dataset_class=cls, x=1, y=1, width=5, height=5)
    return dataset


def test_a_new_dataset_has_empty_stats(db):
    dataset = dataset_create(name="empty", class_names=["waste"])
    assert stats(dataset) == (0, 0, None)


def test_inserts_through_the_services_are_counted_with_the_extent(placed):
    assert stats(placed) == recount(placed)
    assert stats(placed)[:2] == (3, 6)
    assert stats(placed)[2] == pytest.approx((13.0, 49.0, 14.51, 50.51))


def test_a_bulk_insert_in_batches_is_counted(placed):
    image = placed.images.first()
    cls = placed.classes.first()
    annotations_bulk_create(
        [annotation_build(image=image, dataset_class=cls, x=1, y=1, width=3, height=3) for _ in range(4500)]
    )  # three statements of 2,000 / 2,000 / 500
    assert stats(placed)[1] == 6 + 4500 == recount(placed)[1]


def test_deleting_boxes_and_images_decrements_and_shrinks_the_extent(placed):
    Annotation.objects.filter(image__original_name="p2.jpg").first().delete()
    assert stats(placed)[:2] == (3, 5)
    DatasetImage.objects.get(original_name="p1.jpg").delete()  # Django deletes its two boxes first
    assert stats(placed) == recount(placed)
    assert stats(placed)[:2] == (2, 3)
    assert stats(placed)[2] == pytest.approx((13.0, 49.0, 14.01, 50.01))  # the north-east image is gone


def test_a_queryset_delete_as_the_admin_does_it(placed):
    DatasetImage.objects.filter(dataset=placed, original_name__in=["p0.jpg", "p2.jpg"]).delete()
    assert stats(placed) == recount(placed)
    assert stats(placed)[:2] == (1, 2)


def test_moving_a_box_to_another_dataset_moves_its_count_and_plain_edits_change_nothing(placed, make_dataset):
    other = make_dataset(name="other", images=1)
    before = stats(other)
    box = Annotation.objects.filter(image__dataset=placed).first()
    box.enabled = False
    box.save()
    assert stats(placed)[:2] == (3, 6)
    box.image = other.images.first()
    box.save()
    assert stats(placed) == recount(placed) and stats(placed)[1] == 5
    assert stats(other) == recount(other) and stats(other)[1] == before[1] + 1


def test_moving_an_image_recounts_both_datasets(placed, make_dataset):
    other = make_dataset(name="other", images=1)
    DatasetImage.objects.filter(original_name="p2.jpg").update(dataset=other)  # with its three boxes
    assert stats(placed) == recount(placed) and stats(placed)[:2] == (2, 3)
    assert stats(other) == recount(other) and stats(other)[:2] == (2, 4)


def test_deleting_a_dataset_removes_its_stats_and_leaves_the_foreign_keys_sound(placed):
    Annotation.objects.filter(image__dataset=placed).delete()  # boxes protect their classes: they go first
    placed.delete()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # check the deferred foreign keys now, not at commit
    assert not DatasetStats.objects.filter(dataset_id=placed.pk).exists()


def test_the_datasets_list_reads_the_stats_and_never_counts_boxes(placed, make_dataset, roles):
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

    make_dataset(name="second", images=2)
    client = APIClient()
    client.force_authenticate(User.objects.create_superuser("root"))
    with CaptureQueriesContext(connection) as ctx:
        body = client.get("/api/datasets/").json()
    assert not any("datasets_annotation" in q["sql"] for q in ctx.captured_queries)
    row = next(r for r in body["results"] if r["name"] == "placed")
    assert (row["image_count"], row["annotation_count"]) == (3, 6)
    assert row["extent"]["type"] == "Polygon"
