"""Georeferencing read from the image files themselves: a GeoTIFF's footprint (from its geotransform, rotation
terms included, in its own CRS, transformed to WGS 84) and location (the footprint's centre); a JPEG's or TIFF's
EXIF GPS position and altitude; and the EXIF capture time (with its offset when the camera wrote one, else the GPS
clock's UTC time, else the camera's local time taken as UTC and said so). GDAL through GeoDjango, Pillow's EXIF
reader: no other native stack.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from django.contrib.gis.gdal import CoordTransform, GDALException, SpatialReference
from django.contrib.gis.geos import GEOSException, Point, Polygon
from PIL import Image

from engine.geometry import NO_GEOTRANSFORM, pixel_to_map

from .rasters import MemoryRaster, RasterRefused

logger = logging.getLogger(__name__)

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 36867, 36881
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON, GPS_ALT_REF, GPS_ALT, GPS_TIME, GPS_DATE = 1, 2, 3, 4, 5, 6, 7, 29


@dataclass
class Georeference:
    location: Point | None = None
    footprint: Polygon | None = None
    altitude_m: float | None = None
    captured_at: datetime | None = None
    found: list[str] = field(default_factory=list)  # what was read, for the import report
    problems: list[str] = field(default_factory=list)  # what was there but could not be used


def to_wgs84(srs: SpatialReference) -> CoordTransform:
    return CoordTransform(srs, SpatialReference(4326))


def window_footprint(geotransform, srs: SpatialReference, x: int, y: int, width: int, height: int):
    """The WGS 84 footprint polygon and centre point of the pixel window (x, y, width, height)."""
    corners = [pixel_to_map(geotransform, px, py) for px, py in ((x, y), (x + width, y), (x + width, y + height))]
    corners.append(pixel_to_map(geotransform, x, y + height))
    transform = to_wgs84(srs)
    footprint = Polygon([*corners, corners[0]], srid=srs.srid or 0)
    centre = Point(*pixel_to_map(geotransform, x + width / 2, y + height / 2), srid=srs.srid or 0)
    footprint.transform(transform)
    centre.transform(transform)
    footprint.srid = centre.srid = 4326
    return footprint, centre


def read_georeference(content: bytes, image_format: str) -> Georeference:
    """What the file says about its place and time; never raises for a file that decoded (a damaged or
    out-of-range tag is a ``problem`` in the report, not a refusal)."""
    found = Georeference()
    if image_format == "TIFF":
        _geotiff(content, found)
    try:
        _exif(content, found)
    except Exception as exc:  # noqa: BLE001 - a tag no check foresaw is a problem of this item, never a crash
        logger.warning("EXIF of an image not usable", exc_info=True)
        found.problems.append(f"EXIF not usable ({type(exc).__name__})")
    return found


def _geotiff(content: bytes, found: Georeference) -> None:
    try:
        with MemoryRaster(content) as raster:
            geotransform, srs = list(raster.geotransform), raster.srs
            width, height = raster.width, raster.height
    except (RasterRefused, GDALException, ValueError, TypeError):
        found.problems.append("GeoTIFF tags unreadable")
        return
    if geotransform == NO_GEOTRANSFORM:
        return
    if srs is None:
        found.problems.append("GeoTIFF geotransform without a coordinate reference system: footprint not set")
        return
    try:
        found.footprint, found.location = window_footprint(geotransform, srs, 0, 0, width, height)
        if not found.footprint.valid:
            raise ValueError("not a valid polygon")
    except (GDALException, GEOSException, ValueError, TypeError, OverflowError):
        found.footprint = found.location = None
        found.problems.append("GeoTIFF footprint not transformable to WGS 84 (a geotransform or CRS out of range)")
        return
    code = f"EPSG:{srs.srid}" if srs.srid else srs.name
    found.found.append(f"GeoTIFF footprint ({code})")


def _rational(value) -> float:
    if isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1]
    return float(value)


def _degrees(dms, ref) -> float:
    degrees, minutes, seconds = (_rational(v) for v in dms)
    value = degrees + minutes / 60 + seconds / 3600
    return -value if str(ref).strip().upper() in ("S", "W") else value


def _exif(content: bytes, found: Georeference) -> None:
    try:
        with Image.open(io.BytesIO(content)) as img:
            exif = img.getexif()
            gps = exif.get_ifd(GPS_IFD)
            details = exif.get_ifd(EXIF_IFD)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged EXIF blocks
        found.problems.append(f"EXIF unreadable ({type(exc).__name__})")
        return
    if found.location is None and GPS_LAT in gps and GPS_LON in gps:
        try:
            lat = _degrees(gps[GPS_LAT], gps.get(GPS_LAT_REF, "N"))
            lon = _degrees(gps[GPS_LON], gps.get(GPS_LON_REF, "E"))
            if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"{lat}, {lon} is not on the globe")
            found.location = Point(lon, lat, srid=4326)
            found.found.append("EXIF GPS position")
            if GPS_ALT in gps:
                altitude = _rational(gps[GPS_ALT])
                if not math.isfinite(altitude) or abs(altitude) > 1e6:
                    raise ValueError(f"altitude {altitude} m is out of range")
                found.altitude_m = -altitude if gps.get(GPS_ALT_REF) in (1, b"\x01") else altitude
                found.found.append("EXIF GPS altitude")
        except (ValueError, TypeError, ZeroDivisionError, OverflowError) as exc:
            found.location = found.altitude_m = None
            found.problems.append(f"EXIF GPS position unreadable ({exc})")
    _capture_time(details, gps, found)


def _capture_time(details, gps, found: Georeference) -> None:
    text = details.get(DATETIME_ORIGINAL)
    try:
        local = datetime.strptime(str(text).strip("\x00 "), "%Y:%m:%d %H:%M:%S") if text else None
    except ValueError:
        found.problems.append(f"EXIF DateTimeOriginal {text!r} unreadable")
        local = None
    offset = details.get(OFFSET_TIME_ORIGINAL)
    if local is not None and offset:
        try:
            sign = -1 if str(offset).startswith("-") else 1
            hours, minutes = str(offset).strip("\x00 +-").split(":")
            tz = timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))
            found.captured_at = local.replace(tzinfo=tz).astimezone(UTC)
            found.found.append("EXIF capture time")
            return
        except ValueError:
            found.problems.append(f"EXIF OffsetTimeOriginal {offset!r} unreadable")
        except OverflowError:  # 0001-01-01 00:00 at +01:00 is before the first instant a datetime holds
            found.problems.append(f"EXIF DateTimeOriginal {text!r} at {offset!r} is out of range")
            local = None
    gps_time = _gps_time(gps)
    if gps_time is not None:
        found.captured_at = gps_time
        found.found.append("GPS capture time (UTC)")
    elif local is not None:
        found.captured_at = local.replace(tzinfo=UTC)
        found.found.append("EXIF capture time (no offset in the file: taken as UTC)")


def _gps_time(gps) -> datetime | None:
    if GPS_DATE not in gps or GPS_TIME not in gps:
        return None
    try:
        day = datetime.strptime(str(gps[GPS_DATE]).strip("\x00 "), "%Y:%m:%d")
        hours, minutes, seconds = (_rational(v) for v in gps[GPS_TIME])
        return day.replace(tzinfo=UTC) + timedelta(hours=hours, minutes=minutes, seconds=seconds)
    except (ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None
