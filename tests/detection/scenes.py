"""Orthophotos the detection tests build themselves: demo-style ground with waste piles painted at known pixel
boxes, written as GeoTIFFs (any CRS, rotated geotransforms, nodata corners, alpha) with their map positions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.contrib.gis.gdal import GDALRaster
from PIL import Image

from datasets.demo import paint_object


@dataclass
class Scene:
    pixels: np.ndarray  # (height, width, 3) uint8
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # painted (x1, y1, x2, y2)


GRASS_AND_SOIL = ((70, 105, 50), (125, 105, 75))
SNOW = ((228, 230, 236), (244, 244, 248))  # a ground the demo tiles never show


def ground(width: int, height: int, seed: int = 0, colours=GRASS_AND_SOIL) -> np.ndarray:
    """Grass and soil (float32 RGB; or two other ``colours``), smooth at the demo tiles' scale, without roofs or
    roads."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.uniform(0, 1, (height // 32 + 2, width // 32 + 2)) * 255).astype(np.uint8))
    low = np.array(coarse.resize((width, height), Image.Resampling.BICUBIC))[..., None].astype(np.float32) / 255.0
    grass, soil = (np.array(c, np.float32) for c in colours)
    return grass * (1 - low) + soil * low + rng.normal(0, 9, (height, width, 3)).astype(np.float32)


def scene(
    width: int, height: int, piles: list[tuple[int, int, int, int]], seed: int = 0, colours=GRASS_AND_SOIL
) -> Scene:
    """Ground with a waste pile painted into each (x, y, w, h) box."""
    canvas = ground(width, height, seed, colours)
    rng = np.random.default_rng(seed + 1)
    boxes = []
    for x, y, w, h in piles:
        _, bx, by, bw, bh = paint_object(canvas, rng, 0, x, y, w, h)
        boxes.append((bx, by, bx + bw, by + bh))
    return Scene(np.clip(canvas, 0, 255).astype(np.uint8), boxes)


def rotated(origin: tuple[float, float], pixel_m: float, degrees: float) -> list[float]:
    """A geotransform whose columns run ``degrees`` counter-clockwise from east."""
    a = math.radians(degrees)
    return [
        origin[0],
        pixel_m * math.cos(a),
        pixel_m * math.sin(a),
        origin[1],
        pixel_m * math.sin(a),
        -pixel_m * math.cos(a),
    ]


def write_geotiff(
    path: Path,
    pixels: np.ndarray,
    *,
    srid: int | None,
    geotransform: list[float] | None,
    nodata: int | None = None,
    alpha: np.ndarray | None = None,
    grey: bool = False,
) -> Path:
    """A GeoTIFF of ``pixels`` (RGB, or its first channel as grey); without ``srid`` a plain TIFF (Pillow's: no
    geo tags), with an ``alpha`` band where given."""
    if srid is None:
        planes = pixels[..., :1] if grey else pixels
        if alpha is not None:
            planes = np.concatenate([planes, alpha[..., None]], axis=2)
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[planes.shape[2]]
        Image.fromarray(planes.squeeze(2) if mode == "L" else planes, mode).save(path, format="TIFF")
        return path
    assert alpha is None, "alpha is written on plain TIFFs only"
    height, width = pixels.shape[:2]
    planes_list = [pixels[..., 0]] if grey else [pixels[..., i] for i in range(3)]
    bands = [{"data": p.tobytes(), **({"nodata_value": nodata} if nodata is not None else {})} for p in planes_list]
    raster = GDALRaster(
        {
            "driver": "GTiff",
            "name": str(path),
            "width": width,
            "height": height,
            "datatype": 1,
            "bands": bands,
            "srid": srid,
        }
    )
    raster.geotransform = geotransform or [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    del raster  # closes the file
    return path
