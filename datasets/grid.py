"""The tile grid of an orthophoto and the sites placed on it: windows generated lazily and counted without being
built; the annotated sites indexed by grid cell, so that a window is only ever tested against the few sites near it
(with prepared geometries); and each window's boxes, the sites clipped to it.

A 2,000,000 px orthophoto with 64 px tiles and an overlap of 32 has about 3.9e9 windows: the count is arithmetic,
checked against ``DUMPSITE_TILING_MAX_WINDOWS`` before one window is made, and the windows come one at a time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from django.contrib.gis.geos import Polygon

from engine.geometry import map_to_pixel, pixel_to_map

from .sites import Site

LARGE = 4096


class SiteIndex:
    """Sites bucketed by the grid cells their pixel bounding box touches. ``candidates(window)`` returns the
    indices of the sites whose box meets the window, in order; the exact test is the caller's."""

    def __init__(self, boxes: list[tuple[float, float, float, float]], cell: int):
        self.cell = max(1, int(cell))
        self.boxes = boxes
        self._cells: dict[tuple[int, int], list[int]] = defaultdict(list)
        self._large: list[int] = []  # sites spanning more than LARGE cells: checked for every window
        for index, (x1, y1, x2, y2) in enumerate(boxes):
            spans = (self._cell_of(x2) - self._cell_of(x1) + 1) * (self._cell_of(y2) - self._cell_of(y1) + 1)
            if spans > LARGE:
                self._large.append(index)
                continue
            for cy in range(self._cell_of(y1), self._cell_of(y2) + 1):
                for cx in range(self._cell_of(x1), self._cell_of(x2) + 1):
                    self._cells[cx, cy].append(index)

    def _cell_of(self, value: float) -> int:
        return math.floor(value / self.cell)

    def candidates(self, window: tuple[int, int, int, int]) -> list[int]:
        x, y, w, h = window
        found: set[int] = set(self._large)
        for cy in range(self._cell_of(y), self._cell_of(y + h) + 1):
            for cx in range(self._cell_of(x), self._cell_of(x + w) + 1):
                found.update(self._cells.get((cx, cy), ()))
        return sorted(i for i in found if _meets(self.boxes[i], window))


def _meets(box, window) -> bool:
    x1, y1, x2, y2 = box
    x, y, w, h = window
    return x1 <= x + w and x2 >= x and y1 <= y + h and y2 >= y


def pixel_box(envelope: tuple[float, float, float, float], to_pixel: Callable[[float, float], tuple[float, float]]):
    """The pixel bounding box of a map envelope (xmin, ymin, xmax, ymax): all four corners mapped, so a rotated
    geotransform still gives a box that holds the geometry."""
    xmin, ymin, xmax, ymax = envelope
    corners = [to_pixel(mx, my) for mx, my in ((xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax))]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return min(xs), min(ys), max(xs), max(ys)


@dataclass
class Tile:
    x: int
    y: int
    width: int
    height: int
    boxes: list[tuple[str, float, float, float, float, dict]]  # class, x, y, w, h in tile pixels, the site's source
    cut_dropped: int = 0


@dataclass
class PlacedSites:
    """An orthophoto's sites with their pixel boxes in a grid index, and their prepared geometries."""

    sites: list[Site]
    index: SiteIndex
    prepared: list

    @classmethod
    def build(cls, geotransform, sites: list[Site], cell: int) -> PlacedSites:
        to_pixel = partial(map_to_pixel, geotransform)
        boxes = [pixel_box(site.geometry.extent, to_pixel) for site in sites]
        return cls(sites, SiteIndex(boxes, cell), [site.geometry.prepared for site in sites])


def tile_boxes(geotransform, srid: int, placed: PlacedSites, window, min_share: float) -> Tile:
    """The sites' boxes in the window's pixels: each site near the window (the index) clipped to the tile (in map
    coordinates), kept when at least ``min_share`` of its area is inside."""
    x, y, w, h = window
    tile = Tile(x, y, w, h, boxes=[])
    near = placed.index.candidates(window)
    if not near:
        return tile
    corners = [pixel_to_map(geotransform, px, py) for px, py in ((x, y), (x + w, y), (x + w, y + h), (x, y + h))]
    cell = Polygon([*corners, corners[0]], srid=srid)
    for i in near:
        site = placed.sites[i]
        if not placed.prepared[i].intersects(cell):
            continue
        piece = site.geometry.intersection(cell)
        if piece.empty or piece.area <= 0:
            continue
        if piece.area / site.geometry.area < min_share - 1e-9:
            tile.cut_dropped += 1
            continue
        pixels = [map_to_pixel(geotransform, mx, my) for mx, my in _points(piece)]
        x1 = max(0.0, min(p[0] for p in pixels) - x)
        y1 = max(0.0, min(p[1] for p in pixels) - y)
        x2 = min(float(w), max(p[0] for p in pixels) - x)
        y2 = min(float(h), max(p[1] for p in pixels) - y)
        if x2 - x1 >= 1 and y2 - y1 >= 1:
            tile.boxes.append((site.class_name, x1, y1, x2 - x1, y2 - y1, site.source))
    return tile


def _points(geometry) -> list[tuple[float, float]]:
    if geometry.geom_type == "Polygon":
        return list(geometry.exterior_ring.coords)
    return [point for part in geometry for point in _points(part)]
