"""Which images of a dataset train and which validate: the split strategies of a run.

- ``random``: seeded shuffle, images with boxes and images without boxes split separately (each side keeps both).
- ``spatial``: a square grid of ``cell_size_m`` metres over the images' footprints (their locations where they
  have none), computed in PostGIS. An image belongs to the cell of its footprint's centroid, and whole cells go to
  one side: neighbouring tiles of one site do not sit on both sides, and the validation mAP says what the model
  does on an area it has not seen. Images reaching into a cell of the other side are counted (``edge_images``).
- ``time``: the newest images (by capture time) validate, the older ones train.

Images the strategy cannot place (no footprint or location; no capture time) are split at random, and the split
says how many were.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from django.db import connection

from core.errors import ApplicationError

from .models import Annotation, Dataset, DatasetImage

STRATEGIES = ("random", "spatial", "time")
DEFAULT_CELL_M = 250.0


def split_ids(ids: list[int], *, val_fraction: float, seed: int) -> tuple[set[int], set[int]]:
    """Split ``ids`` into (train, val); the same ids, fraction and seed always give the same split."""
    ordered = sorted(ids)
    random.Random(seed).shuffle(ordered)
    n_val = round(len(ordered) * val_fraction)
    if len(ordered) >= 2:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    else:
        n_val = 0
    return set(ordered[n_val:]), set(ordered[:n_val])


@dataclass
class Split:
    strategy: str
    train: set[int]
    val: set[int]
    fallback_random: int = 0  # images the strategy could not place, split at random
    details: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "strategy": self.strategy,
            "train_images": len(self.train),
            "val_images": len(self.val),
            "fallback_random": self.fallback_random,
            **self.details,
        }


def _random(with_boxes: list[int], without: list[int], *, val_fraction: float, seed: int) -> tuple[set, set]:
    train_a, val_a = split_ids(with_boxes, val_fraction=val_fraction, seed=seed)
    train_b, val_b = split_ids(without, val_fraction=val_fraction, seed=seed)
    return train_a | train_b, val_a | val_b


def grid_cells(dataset: Dataset, *, cell_size_m: float) -> dict[int, tuple[tuple[int, int], list[tuple[int, int]]]]:
    """Each located enabled image's grid cell (the one holding its footprint's centroid, or its location) and the
    cells its footprint reaches into (interiors overlapping; sharing an edge does not count), on a Web Mercator
    grid whose cells are ``cell_size_m`` metres wide at the dataset's mean latitude."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT ST_Y(ST_Centroid(ST_Collect(COALESCE(footprint, location)))) FROM datasets_datasetimage "
            "WHERE dataset_id = %s AND enabled",
            [dataset.pk],
        )
        latitude = cursor.fetchone()[0]
        if latitude is None:
            return {}
        # Web Mercator stretches distances by 1 / cos(latitude); the grid's size in its units follows.
        size = cell_size_m / max(math.cos(math.radians(latitude)), 0.01)
        cursor.execute(
            """
            WITH located AS (
                SELECT id, ST_Transform(COALESCE(footprint, location), 3857) AS geom
                FROM datasets_datasetimage
                WHERE dataset_id = %s AND enabled AND COALESCE(footprint, location) IS NOT NULL
            )
            SELECT located.id,
                   floor(ST_X(ST_Centroid(located.geom)) / %s)::bigint,
                   floor(ST_Y(ST_Centroid(located.geom)) / %s)::bigint,
                   cell.i, cell.j
            FROM located, LATERAL ST_SquareGrid(%s, located.geom) AS cell
            WHERE ST_Intersects(cell.geom, located.geom)
              AND (ST_Dimension(located.geom) = 0 OR NOT ST_Touches(cell.geom, located.geom))
            ORDER BY located.id, cell.i, cell.j
            """,
            [dataset.pk, size, size, size],
        )
        cells: dict[int, tuple[tuple[int, int], list[tuple[int, int]]]] = {}
        for image_id, home_i, home_j, i, j in cursor.fetchall():
            cells.setdefault(image_id, ((home_i, home_j), []))[1].append((i, j))
    return cells


def _spatial(images: list[int], with_boxes: set[int], *, val_fraction: float, seed: int, cell_size_m: float, dataset):
    """Whole cells to one side: images are grouped by the cell of their centroid, cells are shuffled (seeded) and
    taken for validation until its share is reached. Images whose footprint reaches into a cell of the other side
    (tiles larger than a cell, or lying across a cell edge) are counted as ``edge_images``: a smaller share of
    overlap, not none; a larger cell size makes it smaller."""
    cells = grid_cells(dataset, cell_size_m=cell_size_m)
    blocks: dict[tuple[int, int], list[int]] = {}
    for image_id, (home, _) in sorted(cells.items()):
        blocks.setdefault(home, []).append(image_id)
    if len(blocks) < 2 and cells:
        raise ApplicationError(
            f"The {len(cells)} located images of dataset {dataset.name!r} lie in one cell of {cell_size_m:g} m; "
            "a spatial split needs at least two. Choose a smaller cell size (split_cell_m).",
            {"split_cell_m": "all images in one cell"},
        )
    order = sorted(blocks)
    random.Random(seed).shuffle(order)
    target = round(len(cells) * val_fraction)
    val_cells: set[tuple[int, int]] = set()
    val: set[int] = set()
    for cell in order:
        if len(val) >= max(target, 1) or len(val_cells) == len(order) - 1:
            break
        val_cells.add(cell)
        val.update(blocks[cell])
    train = set(cells) - val
    edge = sum(
        1
        for image_id, (_, reached) in cells.items()
        if any((c in val_cells) != (image_id in val) for c in reached if c in blocks)
    )
    rest = [i for i in images if i not in cells]
    rest_train, rest_val = _random(
        [i for i in rest if i in with_boxes],
        [i for i in rest if i not in with_boxes],
        val_fraction=val_fraction,
        seed=seed,
    )
    details = {"cell_size_m": cell_size_m, "cells": len(blocks), "val_cells": len(val_cells), "edge_images": edge}
    return train | rest_train, val | rest_val, len(rest), details


def _by_time(dataset: Dataset, images: list[int], with_boxes: set[int], *, val_fraction: float, seed: int):
    dated = [
        (pk, captured)
        for pk, captured in DatasetImage.objects.filter(dataset=dataset, enabled=True, captured_at__isnull=False)
        .order_by("captured_at", "id")
        .values_list("id", "captured_at")
        if captured is not None
    ]
    n_val = min(max(round(len(dated) * val_fraction), 1), len(dated) - 1) if len(dated) >= 2 else 0
    train = {i for i, _ in dated[: len(dated) - n_val]}
    val = {i for i, _ in dated[len(dated) - n_val :]}
    dated_ids = train | val
    rest = [i for i in images if i not in dated_ids]
    rest_train, rest_val = _random(
        [i for i in rest if i in with_boxes],
        [i for i in rest if i not in with_boxes],
        val_fraction=val_fraction,
        seed=seed,
    )
    details = {}
    if val and train:
        details["val_from"] = min(t for i, t in dated if i in val).isoformat()
        details["train_until"] = max(t for i, t in dated if i in train).isoformat()
    return train | rest_train, val | rest_val, len(rest), details


def split_dataset(
    dataset: Dataset,
    *,
    images: list[int],
    with_boxes: set[int],
    strategy: str = "random",
    val_fraction: float,
    seed: int,
    cell_size_m: float = DEFAULT_CELL_M,
) -> Split:
    """Split the enabled ``images`` (ids) of ``dataset``; ``with_boxes``: those of them with enabled boxes."""
    if strategy == "random":
        train, val = _random(
            [i for i in images if i in with_boxes],
            [i for i in images if i not in with_boxes],
            val_fraction=val_fraction,
            seed=seed,
        )
        return Split("random", train, val)
    if strategy == "spatial":
        train, val, rest, details = _spatial(
            images, with_boxes, val_fraction=val_fraction, seed=seed, cell_size_m=cell_size_m, dataset=dataset
        )
        return Split("spatial", train, val, rest, details)
    if strategy == "time":
        train, val, rest, details = _by_time(dataset, images, with_boxes, val_fraction=val_fraction, seed=seed)
        return Split("time", train, val, rest, details)
    raise ApplicationError(f"Unknown split strategy {strategy!r}.", {"split": f"one of {', '.join(STRATEGIES)}"})


def split_preview(dataset: Dataset, *, strategy: str, val_fraction: float, seed: int, cell_size_m: float) -> dict:
    """The split a run would make now (ids only; no export): its summary, or ApplicationError when it cannot be
    made (one spatial cell). Runs are checked with it before they are queued."""

    images = list(DatasetImage.objects.filter(dataset=dataset, enabled=True).values_list("id", flat=True))
    with_boxes = set(
        Annotation.objects.filter(image__dataset=dataset, image__enabled=True, enabled=True)
        .values_list("image_id", flat=True)
        .distinct()
    )
    split = split_dataset(
        dataset,
        images=images,
        with_boxes=with_boxes,
        strategy=strategy,
        val_fraction=val_fraction,
        seed=seed,
        cell_size_m=cell_size_m,
    )
    return split.summary()
