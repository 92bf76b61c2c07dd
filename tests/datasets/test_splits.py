"""Split strategies: spatial blocks computed in PostGIS, capture time, and the fallback for images that lack them."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.gis.geos import Point, Polygon
from django.db import connection

from core.errors import ApplicationError
from datasets.coco_export import build_coco, content_hash, manifest_of
from datasets.services import annotation_create, dataset_create, dataset_image_create
from datasets.splits import grid_cells
from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.django_db

LAT0, LON0 = 48.0, 16.0
TILE_M = 100.0  # tiles 100 m wide, side by side
S = 400.0  # a grid cell in Web Mercator units in the aligned test


def _tile(i: int, j: int) -> Polygon:
    """The footprint of tile (i, j) of a mosaic of 100 m tiles touching each other, in WGS 84."""
    dlat = TILE_M / 111_320.0
    dlon = TILE_M / (111_320.0 * math.cos(math.radians(LAT0)))
    x0, y0 = LON0 + i * dlon, LAT0 + j * dlat
    return Polygon(((x0, y0), (x0 + dlon, y0), (x0 + dlon, y0 + dlat), (x0, y0 + dlat), (x0, y0)), srid=4326)


def _grid_dataset(n=8, *, unlocated=0, dated=False):
    dataset = dataset_create(name=f"grid-{n}-{unlocated}-{dated}", class_names=["waste"])
    cls = dataset.classes.get()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    k = 0
    for i in range(n):
        for j in range(n):
            fp = _tile(i, j)
            image = dataset_image_create(
                dataset=dataset,
                content=jpeg_bytes(colour=(i * 20 % 255, j * 20 % 255, k % 255)),
                footprint=fp,
                location=fp.centroid,
                captured_at=start + timedelta(hours=k) if dated else None,
            )
            annotation_create(image=image, dataset_class=cls, x=1, y=1, width=10, height=10)
            k += 1
    for u in range(unlocated):
        dataset_image_create(dataset=dataset, content=jpeg_bytes(colour=(250, u * 30 % 255, 3)))
    return dataset


def _aligned_dataset(cells=6):
    """Four tiles in each cell of a ``cells`` x ``cells`` grid of S-unit Web Mercator cells, each tile inside its
    cell's quarter with a margin: the dataset laid out on the split's own grid."""
    dataset = dataset_create(name="aligned", class_names=["waste"])
    cls = dataset.classes.get()
    origin = Point(LON0, LAT0, srid=4326).transform(3857, clone=True)
    x0, y0 = math.floor(origin.x / S) * S, math.floor(origin.y / S) * S
    half, margin, k = S / 2, 5.0, 0
    for ci in range(cells):
        for cj in range(cells):
            for qi in range(2):
                for qj in range(2):
                    left, bottom = x0 + ci * S + qi * half + margin, y0 + cj * S + qj * half + margin
                    right, top = left + half - 2 * margin, bottom + half - 2 * margin
                    fp = Polygon(
                        ((left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)), srid=3857
                    ).transform(4326, clone=True)
                    image = dataset_image_create(dataset=dataset, content=jpeg_bytes(width=32 + k), footprint=fp)
                    annotation_create(image=image, dataset_class=cls, x=1, y=1, width=10, height=10)
                    k += 1
    with connection.cursor() as cursor:  # the latitude the split scales its cells at
        cursor.execute(
            "SELECT ST_Y(ST_Centroid(ST_Collect(footprint))) FROM datasets_datasetimage WHERE dataset_id = %s",
            [dataset.pk],
        )
        latitude = cursor.fetchone()[0]
    return dataset, S * math.cos(math.radians(latitude))


def test_spatial_split_puts_whole_cells_on_one_side():
    dataset, cell_m = _aligned_dataset()
    train, val = build_coco(dataset, val_fraction=0.25, seed=3, strategy="spatial", cell_size_m=cell_m)
    split = train["info"]["split"]
    assert split["strategy"] == "spatial" and split["cells"] == 36 and split["edge_images"] == 0
    cells = grid_cells(dataset, cell_size_m=cell_m)
    assert all(reached == [home] for home, reached in cells.values())  # every tile inside its one cell
    train_cells = {cells[img["id"]][0] for img in train["images"]}
    val_reach = {c for img in val["images"] for c in cells[img["id"]][1]}
    # No validation image's footprint touches a training image's cell.
    assert val_reach and train_cells and not val_reach & train_cells
    assert len(val["images"]) % 4 == 0 and 0.15 <= len(val["images"]) / 144 <= 0.35


def test_spatial_split_of_a_mosaic_counts_the_tiles_across_cell_edges():
    dataset = _grid_dataset(8, unlocated=4)
    train, val = build_coco(dataset, val_fraction=0.25, seed=3, strategy="spatial", cell_size_m=250)
    split = train["info"]["split"]
    assert split["fallback_random"] == 4 and split["cells"] >= 4
    cells = grid_cells(dataset, cell_size_m=250)
    homes_val = {cells[i["id"]][0] for i in val["images"] if i["id"] in cells}
    homes_train = {cells[i["id"]][0] for i in train["images"] if i["id"] in cells}
    assert homes_val and homes_train and not homes_val & homes_train  # whole cells to one side
    crossing = sum(
        1
        for image_id, (_, reached) in cells.items()
        if any((c in homes_val) != (cells[image_id][0] in homes_val) for c in reached if c in homes_val | homes_train)
    )
    assert split["edge_images"] == crossing > 0  # the mosaic's tiles straddle cell edges, and the split says so


def test_spatial_split_is_reproducible_and_seeded():
    dataset = _grid_dataset(6)
    first = build_coco(dataset, val_fraction=0.3, seed=1, strategy="spatial", cell_size_m=150)
    again = build_coco(dataset, val_fraction=0.3, seed=1, strategy="spatial", cell_size_m=150)
    other = build_coco(dataset, val_fraction=0.3, seed=2, strategy="spatial", cell_size_m=150)
    ids = [sorted(i["id"] for i in doc[1]["images"]) for doc in (first, again, other)]
    assert ids[0] == ids[1] and ids[0] != ids[2]


def test_spatial_split_refuses_one_block():
    dataset = _grid_dataset(3)
    with pytest.raises(ApplicationError, match="one cell"):
        build_coco(dataset, val_fraction=0.3, seed=0, strategy="spatial", cell_size_m=5000)


def test_time_split_validates_on_the_newest_images():
    dataset = _grid_dataset(4, unlocated=2, dated=True)
    train, val = build_coco(dataset, val_fraction=0.25, seed=0, strategy="time")
    split = val["info"]["split"]
    assert split["strategy"] == "time" and split["fallback_random"] == 2
    assert split["val_from"] > split["train_until"]
    dated_val = [
        i
        for i in val["images"]
        if i["id"] in set(dataset.images.filter(captured_at__isnull=False).values_list("id", flat=True))
    ]
    assert len(dated_val) == 4  # a quarter of the 16 dated images


def test_manifest_lists_each_side_and_hashes_content():
    dataset = _grid_dataset(3)
    train, val = build_coco(dataset, val_fraction=0.3, seed=0)
    manifest = manifest_of(train, val)
    assert set(manifest["train"]["image_ids"]).isdisjoint(manifest["val"]["image_ids"])
    assert len(manifest["train"]["box_ids"]) + len(manifest["val"]["box_ids"]) == 9
    assert manifest["train"]["content_hash"] == content_hash(build_coco(dataset, val_fraction=0.3, seed=0)[0])
    # Moving one box changes the hash of the side it is on, and only that one.
    box = dataset.images.get(pk=val["images"][0]["id"]).annotations.get()
    box.x = 5
    box.save()
    train2, val2 = build_coco(dataset, val_fraction=0.3, seed=0)
    assert content_hash(val2) != manifest["val"]["content_hash"]
    assert content_hash(train2) == manifest["train"]["content_hash"]


def test_a_run_with_an_impossible_spatial_split_is_refused_before_queueing():
    from training.models import TrainingRun
    from training.services import training_run_create, training_run_plan

    dataset = _grid_dataset(3)
    with pytest.raises(ApplicationError, match="one cell"):
        training_run_create(dataset=dataset, parameters={"split": "spatial", "split_cell_m": 5000})
    assert not TrainingRun.objects.exists()
    plan = training_run_plan(
        dataset=dataset,
        architecture="retinanet_r18_tiny",
        base_model=None,
        parameters={"split": "spatial", "split_cell_m": 150},
    )
    assert plan.split["strategy"] == "spatial" and plan.split["val_images"] >= 1 and plan.split["cells"] >= 2
