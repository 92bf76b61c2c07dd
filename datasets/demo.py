"""Deterministic synthetic aerial tiles: waste piles and construction debris among roofs, roads and trees.

Each tile is georeferenced on a regular grid (0.2 m per pixel) so the dataset has real locations and footprints.
The same seed always gives the same pixels, boxes and places.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import cos, radians

import numpy as np
from django.contrib.gis.geos import Point, Polygon
from PIL import Image, ImageDraw, ImageFilter

from .import_batch import ImageImport
from .models import Dataset
from .services import (
    annotation_build,
    annotations_bulk_create,
    dataset_create,
)

DEMO_CLASSES = ["waste_pile", "construction_debris"]
GROUND_SAMPLE_M = 0.2
ORIGIN_LON, ORIGIN_LAT = 14.48, 46.03


@dataclass(frozen=True)
class Tile:
    jpeg: bytes
    boxes: list[tuple[int, float, float, float, float]]  # (class index, x, y, width, height)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = rng.uniform(0, 1, (size // 32 + 2, size // 32 + 2, 1))
    low = np.array(
        Image.fromarray((coarse[..., 0] * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    )
    low = low[..., None].astype(np.float32) / 255.0
    grass = np.array([70, 105, 50], np.float32)
    soil = np.array([125, 105, 75], np.float32)
    img: np.ndarray = grass * (1 - low) + soil * low
    img += rng.normal(0, 9, (size, size, 3))
    return img


def _blob_mask(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    for _ in range(rng.integers(4, 8)):
        ew, eh = rng.uniform(0.35, 0.8) * w, rng.uniform(0.35, 0.8) * h
        cx, cy = rng.uniform(ew / 2, w - ew / 2), rng.uniform(eh / 2, h - eh / 2)
        draw.ellipse([cx - ew / 2, cy - eh / 2, cx + ew / 2, cy + eh / 2], fill=255)
    return mask


def _waste_texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    palette = np.array(
        [[235, 235, 230], [40, 60, 170], [200, 40, 40], [30, 30, 30], [230, 200, 40], [90, 170, 210], [180, 180, 190]],
        np.float32,
    )
    cells = rng.integers(0, len(palette), (h // 3 + 1, w // 3 + 1))
    tex = palette[cells].repeat(3, 0).repeat(3, 1)[:h, :w]
    return tex + rng.normal(0, 12, (h, w, 3))


def _debris_texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    base = np.array([190, 175, 150], np.float32)
    cells = rng.uniform(-60, 50, (h // 6 + 1, w // 6 + 1, 1))
    tex = base + cells.repeat(6, 0).repeat(6, 1)[:h, :w]
    return tex + rng.normal(0, 6, (h, w, 3))


def _distractors(rng: np.random.Generator, img: Image.Image, size: int) -> None:
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.5:  # a road crossing the tile
        y = rng.uniform(0.1, 0.9) * size
        width = rng.uniform(10, 18)
        grey = int(rng.integers(95, 125))
        draw.line([(0, y), (size, y + rng.uniform(-60, 60))], fill=(grey, grey, grey + 5), width=int(width))
    for _ in range(rng.integers(0, 3)):  # roofs: flat colour with a ridge
        w, h = rng.uniform(25, 55), rng.uniform(25, 55)
        x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
        colour = [(150, 60, 45), (110, 110, 115), (170, 90, 60)][int(rng.integers(0, 3))]
        draw.rectangle([x, y, x + w, y + h], fill=colour)
        draw.line([(x, y + h / 2), (x + w, y + h / 2)], fill=tuple(c - 30 for c in colour), width=2)
    for _ in range(rng.integers(0, 4)):  # trees
        r = rng.uniform(6, 14)
        x, y = rng.uniform(r, size - r), rng.uniform(r, size - r)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(30, 70, 30))


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A square of grass and soil with roads, roofs and trees (float32 RGB), as the demo tiles have."""
    img = Image.fromarray(np.clip(_background(rng, size), 0, 255).astype(np.uint8))
    _distractors(rng, img, size)
    return np.array(img, np.float32)


def paint_object(
    canvas: np.ndarray, rng: np.random.Generator, cls: int, x: int, y: int, w: int, h: int
) -> tuple[int, float, float, float, float]:
    """Paint a waste pile (class 0) or construction debris (class 1) with its shadow into the ``w`` x ``h`` box at
    (x, y) of ``canvas`` (float32 RGB, in place); returns (class, x, y, width, height) of what was painted."""
    blob = _blob_mask(rng, w, h)
    mask = np.array(blob, np.float32)[..., None] / 255.0
    # A pile casts a shadow: a darker rim just outside its outline.
    rim = np.array(blob.filter(ImageFilter.MaxFilter(5)), np.float32)[..., None] / 255.0 - mask
    canvas[y : y + h, x : x + w] *= 1 - 0.45 * np.clip(rim, 0, 1)
    tex = _waste_texture(rng, w, h) if cls == 0 else _debris_texture(rng, w, h)
    canvas[y : y + h, x : x + w] = canvas[y : y + h, x : x + w] * (1 - mask) + tex * mask
    ys, xs = np.nonzero(mask[..., 0] > 0.5)
    return cls, float(x + xs.min()), float(y + ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)


def generate_tile(seed: int, index: int, size: int = 256) -> Tile:
    rng = np.random.default_rng([seed, index])
    img = Image.fromarray(np.clip(_background(rng, size), 0, 255).astype(np.uint8))
    _distractors(rng, img, size)
    canvas = np.array(img, np.float32)
    boxes: list[tuple[int, float, float, float, float]] = []
    count = 0 if rng.random() < 0.1 else int(rng.integers(1, 4))
    for _ in range(count):
        cls = int(rng.integers(0, len(DEMO_CLASSES)))
        w, h = int(rng.integers(34, 84)), int(rng.integers(34, 84))
        for _attempt in range(10):
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            if all(x + w <= bx or bx + bw <= x or y + h <= by or by + bh <= y for _, bx, by, bw, bh in boxes):
                break
        else:
            continue
        boxes.append(paint_object(canvas, rng, cls, x, y, w, h))
    out = io.BytesIO()
    Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=92)
    return Tile(jpeg=out.getvalue(), boxes=boxes)


def tile_geometry(index: int, size: int = 256, columns: int = 20) -> tuple[Point, Polygon]:
    """Centre point and footprint of tile ``index`` on a grid starting at the demo origin."""
    metres = size * GROUND_SAMPLE_M
    dlat = metres / 111_320.0
    dlon = metres / (111_320.0 * cos(radians(ORIGIN_LAT)))
    row, col = divmod(index, columns)
    west, north = ORIGIN_LON + col * dlon, ORIGIN_LAT - row * dlat
    east, south = west + dlon, north - dlat
    footprint = Polygon(((west, north), (east, north), (east, south), (west, south), (west, north)), srid=4326)
    return Point((west + east) / 2, (north + south) / 2, srid=4326), footprint


def demo_dataset_create(
    *, name: str, images: int = 200, seed: int = 0, created_by=None, progress: Callable[[int, int], None] | None = None
) -> Dataset:
    with ImageImport() as batch:
        dataset = dataset_create(
            name=name,
            class_names=DEMO_CLASSES,
            created_by=created_by,
            description=f"Synthetic aerial tiles (seed {seed}), made by make_demo_dataset.",
        )
        classes = list(dataset.classes.order_by("position"))
        start = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
        for index in range(images):
            tile = generate_tile(seed, index)
            location, footprint = tile_geometry(index)
            image = batch.add(
                dataset=dataset,
                content=tile.jpeg,
                original_name=f"tile_{index:05d}.jpg",
                location=location,
                footprint=footprint,
                captured_at=start + timedelta(seconds=20 * index),
            )
            annotations_bulk_create(
                [
                    annotation_build(image=image, dataset_class=classes[cls], x=x, y=y, width=w, height=h)
                    for cls, x, y, w, h in tile.boxes
                ]
            )
            if progress:
                progress(index + 1, images)
    return dataset
