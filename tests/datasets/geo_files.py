"""Georeferenced files written by the tests themselves: GeoTIFFs through GDAL (GeoDjango), a GeoTIFF-like TIFF
with a geotransform but no CRS, JPEGs with EXIF GPS and capture time through Pillow."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np
from django.contrib.gis.gdal import GDALRaster
from PIL import Image, TiffImagePlugin


def write_geotiff(
    path: Path,
    *,
    srid: int,
    origin: tuple[float, float],
    scale: tuple[float, float],
    skew: tuple[float, float] = (0.0, 0.0),
    size: tuple[int, int] = (64, 48),
    bands: int = 3,
    pixels=None,
) -> Path:
    """A tiled, deflated GeoTIFF: geotransform [x0, scale_x, skew_x, y0, skew_y, scale_y] (GDAL's order).
    ``pixels(band, y0, rows, width)`` gives each block of rows (default: seeded noise, never all zero)."""
    width, height = size
    raster = GDALRaster(
        {
            "driver": "GTiff",
            "name": str(path),
            "width": width,
            "height": height,
            "srid": srid,
            "origin": list(origin),
            "scale": list(scale),
            "skew": list(skew),
            "datatype": 1,
            "nr_of_bands": bands,
            "papsz_options": {"compress": "deflate", "tiled": "yes", "blockxsize": 256, "blockysize": 256},
        }
    )
    step = 512
    for band_index, band in enumerate(raster.bands):
        for y0 in range(0, height, step):
            rows = min(step, height - y0)
            if pixels is None:
                block = np.random.default_rng([band_index, y0]).integers(30, 230, (rows, width)).astype(np.uint8)
            else:
                block = pixels(band_index, y0, rows, width)
            band.data(block, offset=(0, y0), size=(width, rows))
    del raster  # flushed and closed
    return path


def tiff_without_crs(path: Path, origin=(500000.0, 5100000.0), pixel=0.5) -> Path:
    """A TIFF with GeoTIFF's pixel scale and tie point (so a geotransform) but no GeoKey directory (so no CRS)."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[33550] = (pixel, pixel, 0.0)
    ifd.tagtype[33550] = 12
    ifd[33922] = (0.0, 0.0, 0.0, origin[0], origin[1], 0.0)
    ifd.tagtype[33922] = 12
    Image.new("RGB", (32, 24), (90, 120, 60)).save(path, tiffinfo=ifd)
    return path


def exif_jpeg(
    *,
    lat: float | None = None,
    lon: float | None = None,
    altitude: float | None = None,
    taken: datetime | None = None,
    offset: str | None = None,
    gps_utc: datetime | None = None,
    colour=(120, 100, 80),
) -> bytes:
    """A JPEG whose EXIF holds a GPS position (degrees, minutes, seconds), altitude and capture time."""
    exif = Image.Exif()
    gps: dict[int, object] = {}
    if lat is not None:
        assert lon is not None, "a position needs both"
        gps.update({1: "N" if lat >= 0 else "S", 2: _dms(abs(lat)), 3: "E" if lon >= 0 else "W", 4: _dms(abs(lon))})
    if altitude is not None:
        gps.update({5: 0 if altitude >= 0 else 1, 6: abs(altitude)})
    if gps_utc is not None:
        gps.update(
            {29: gps_utc.strftime("%Y:%m:%d"), 7: (float(gps_utc.hour), float(gps_utc.minute), float(gps_utc.second))}
        )
    if gps:
        exif[0x8825] = gps
    details = {}
    if taken is not None:
        details[36867] = taken.strftime("%Y:%m:%d %H:%M:%S")
    if offset is not None:
        details[36881] = offset
    if details:
        exif[0x8769] = details
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def _dms(value: float) -> tuple[float, float, float]:
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return float(degrees), float(minutes), seconds
