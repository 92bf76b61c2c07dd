"""Plane geometry of rasters, Django-free: GDAL's affine geotransform (pixel/line to map coordinates and back, rotation
terms included) and the grid of windows an image is cut into (tiling for training, sliced detection).

A 2,000,000 px orthophoto with 64 px tiles and an overlap of 32 has about 3.9e9 windows: the count is arithmetic,
checked before one window is made, and the windows come one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

NO_GEOTRANSFORM = [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def pixel_to_map(geotransform: Sequence[float], px: float, py: float) -> tuple[float, float]:
    """GDAL's affine geotransform: pixel/line to map coordinates (rotation terms included)."""
    x0, a, b, y0, d, e = geotransform
    return x0 + px * a + py * b, y0 + px * d + py * e


def map_to_pixel(geotransform: Sequence[float], x: float, y: float) -> tuple[float, float]:
    x0, a, b, y0, d, e = geotransform
    det = a * e - b * d
    dx, dy = x - x0, y - y0
    return (e * dx - b * dy) / det, (a * dy - d * dx) / det


def _starts_count(extent: int, size: int, step: int) -> int:
    if extent <= size:
        return 1
    regular = (extent - size) // step + 1
    return regular + (1 if (regular - 1) * step != extent - size else 0)


def _starts(extent: int, size: int, step: int) -> Iterator[int]:
    if extent <= size:
        yield 0
        return
    last = 0
    for last in range(0, extent - size + 1, step):
        yield last
    if last != extent - size:
        yield extent - size


def window_count(width: int, height: int, size: int, overlap: int) -> int:
    """How many windows ``windows`` yields, without making them."""
    step = size - overlap
    return _starts_count(width, size, step) * _starts_count(height, size, step)


def windows(width: int, height: int, size: int, overlap: int) -> Iterator[tuple[int, int, int, int]]:
    """Tile windows (x, y, w, h), row by row: a step of size - overlap, the last row and column aligned to the
    edge (an extent smaller than a tile gives one window of its own size)."""
    step = size - overlap
    w, h = min(size, width), min(size, height)
    for y in _starts(height, size, step):
        for x in _starts(width, size, step):
            yield x, y, w, h
