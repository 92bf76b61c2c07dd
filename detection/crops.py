"""Crops of an orthophoto around what a detection run found or missed, for the admin: the detection (or the known
site) outlined in the middle of its surroundings.

- Cut with one windowed read through the platform's GDAL policy (``engine.raster``): never the whole orthophoto;
  GDAL resamples the window to at most twice the picture's size on read, Pillow finishes the reduction.
- Drawn once: the picture is kept in the storage under ``cache/crops/`` (stored whole, named by the run, the object
  and its pixel box, so a box moved by a later review draws a new picture), and pruned with the other picture
  caches. An orthophoto in a bucket is read by window with ranged GETs (``datasets.rasters.stored_raster``).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.gis.gdal import CoordTransform, GDALException, SpatialReference
from django.contrib.gis.geos import GEOSException

from core.errors import ApplicationError
from core.file_cache import cached_picture, keep_picture
from datasets.models import Orthophoto
from datasets.rasters import stored_raster
from engine.geometry import map_to_pixel
from engine.raster import RasterRefused

from .models import Detection, KnownSite

SIDE = 320  # the picture's longer side, in screen pixels
REVIEW_SIDE = 560  # the review page's larger picture, without the outline (the page draws the box to edit)
CONTEXT = 1.0  # the box's own size again on every side, for surroundings
MIN_WINDOW = 96  # ground pixels: a tiny box is still shown in a readable neighbourhood
OUTLINE = {"detection": (255, 59, 48), "site": (255, 204, 0)}
WGS84 = SpatialReference(4326)


@dataclass(frozen=True)
class Target:
    """What a crop shows: a box in an orthophoto's pixels, and how it is outlined."""

    orthophoto: Orthophoto
    box: tuple[float, float, float, float]
    kind: str
    name: str


CROPS = "cache/crops"  # the stored folder of the crops' cache


def detection_target(detection: Detection) -> Target:
    x1, y1, x2, y2 = (float(v) for v in detection.pixel_box)
    return Target(detection.orthophoto, (x1, y1, x2, y2), "detection", f"d{detection.pk}")


def site_target(site: KnownSite, orthophotos: list[Orthophoto]) -> Target | None:
    """The known site in the pixels of the run's orthophoto that covers most of it (None: none covers it)."""
    best, best_area = None, 0.0
    for ortho in orthophotos:
        if ortho.footprint is None or not ortho.geotransform:
            continue
        try:
            area = site.geometry.intersection(ortho.footprint).area
        except GEOSException:
            continue
        if area > best_area:
            best, best_area = ortho, area
    if best is None:
        return None
    try:
        ground = site.geometry.transform(CoordTransform(WGS84, SpatialReference(best.srs_wkt)), clone=True)
    except (GDALException, GEOSException):
        return None
    x_min, y_min, x_max, y_max = ground.extent
    corners = [
        map_to_pixel(best.geotransform or [], x, y)
        for x, y in ((x_min, y_min), (x_max, y_min), (x_max, y_max), (x_min, y_max))
    ]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return Target(best, (min(xs), min(ys), max(xs), max(ys)), "site", f"s{site.pk}")


def crop_name(run_id: int, target: Target, *, side: int = SIDE, outline: bool = True) -> str:
    box = "-".join(str(round(v)) for v in target.box)
    variant = f"-{side}" + ("" if outline else "-plain")
    return f"{CROPS}/run-{run_id}/{target.name}-{box}{variant}.jpg"


def crop_window(target: Target) -> tuple[int, int, int, int]:
    """The window read around the box: the box with context, at least MIN_WINDOW, inside the raster."""
    ortho, (x1, y1, x2, y2) = target.orthophoto, target.box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * CONTEXT)
    side = max(side, MIN_WINDOW)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = int(max(0, min(ortho.width - 1, cx - side / 2)))
    top = int(max(0, min(ortho.height - 1, cy - side / 2)))
    right = int(max(left + 1, min(ortho.width, cx + side / 2)))
    bottom = int(max(top + 1, min(ortho.height, cy + side / 2)))
    return left, top, right - left, bottom - top


def crop_render(run_id: int, target: Target, *, side: int = SIDE, outline: bool = True) -> bytes:
    """The crop's picture, ``side`` px at most, the box outlined or not (the review page draws its own, which the
    reviewer moves), drawn on first use."""
    # Pillow loads only where a picture is drawn
    from PIL import Image, ImageDraw

    name = crop_name(run_id, target, side=side, outline=outline)
    cached = cached_picture(name)
    if cached is not None:
        return cached
    x, y, width, height = crop_window(target)
    scale = min(1.0, 2 * side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    try:
        with stored_raster(target.orthophoto.file.name) as raster:
            pixels = raster.read_bytes(x, y, width, height, raster.colour_bands, size)
    except (RasterRefused, OSError) as exc:
        raise ApplicationError(f"The orthophoto {target.orthophoto.name!r} cannot be read: {exc}.") from None
    picture = Image.frombytes("RGB", size, pixels)
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    if outline:
        shown = picture.width / width
        x1, y1, x2, y2 = target.box
        draw = ImageDraw.Draw(picture)
        draw.rectangle(
            [(x1 - x) * shown, (y1 - y) * shown, (x2 - x) * shown, (y2 - y) * shown],
            outline=OUTLINE[target.kind],
            width=2,
        )
    return keep_picture(name, lambda out: picture.save(out, "JPEG", quality=85))
