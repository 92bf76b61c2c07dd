"""GDAL as the platform allows it: what a user's raster may make GDAL do, set once per process and again at every
open of a user's file.

GDAL opens whatever a file names: a VRT reads any local file (``VRTRawRasterBand`` over ``/proc/self/environ``) or
URL (``/vsicurl/``), WMS/WMTS XML files fetch URLs, a GeoTIFF's ``.aux.xml`` side file can replace its
georeferencing, and a dozen other drivers (netCDF, HDF5, ...) parse containers of their own. So:

- **Drivers**: every raster and vector driver but GTiff (the orthophotos' format) and MEM (in-memory rasters the
  platform makes itself, never a user's) is deregistered once per process (``configure``), and every user file is
  opened with ``GDALOpenEx`` naming GTiff as the one allowed driver (``open_raster``): a VRT, a WMS XML or an HDF5
  file is "not a GeoTIFF", whatever its name.
- **No side files**: the sibling list GDAL is given holds the file alone, and PAM (``.aux.xml``) and the world-file
  georeference sources are off, so no ``.ovr``, ``.msk``, ``.aux.xml``, ``.tfw`` or ``.tab`` beside the file is
  read; directories are never listed on open.
- **No network**: ``/vsicurl/`` and its kin accept no file name (an extension no name has), with short time-outs
  and no retries; the paths the platform opens are its own files (``/vsi`` prefixes are refused).
- **Bounded**: GDAL's block cache is capped (``GDAL_CACHEMAX``).

The constants are ``engine.raster``'s: the detection child, which runs no Django, opens files under the same policy.
"""

from __future__ import annotations

import ctypes
import os
import threading
import uuid
from pathlib import Path

from django.contrib.gis.gdal import GDALException, GDALRaster
from django.contrib.gis.gdal.driver import Driver
from django.contrib.gis.gdal.libgdal import lgdal

from core.storage import bucket_key, in_bucket, local_file, site_bucket
from engine.raster import (
    ALLOWED_DRIVERS,
    CONFIG,
    GDAL_OF_RASTER,
    KEPT_DRIVERS,
    BucketObject,
    Raster,
    RasterRefused,
    strings,
)

_lock = threading.Lock()
_configured = False


_c: dict = {}  # GDAL functions of this module's own (lgdal["name"] is a new object; GeoDjango's are left as they are)


def _bind() -> None:
    signatures = {
        "GDALOpenEx": (
            ctypes.c_void_p,
            [ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p],
        ),
        "VSIFileFromMemBuffer": (ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int]),
        "VSIFCloseL": (ctypes.c_int, [ctypes.c_void_p]),
        "VSIUnlink": (ctypes.c_int, [ctypes.c_char_p]),
        "GDALGetDriverCount": (ctypes.c_int, []),
        "GDALGetDriver": (ctypes.c_void_p, [ctypes.c_int]),
        "GDALGetDriverShortName": (ctypes.c_char_p, [ctypes.c_void_p]),
        "GDALDeregisterDriver": (None, [ctypes.c_void_p]),
        "CPLSetConfigOption": (None, [ctypes.c_char_p, ctypes.c_char_p]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = lgdal[name]
        function.restype = restype
        function.argtypes = argtypes  # type: ignore[assignment]  # ctypes' own types, given as data above
        _c[name] = function


def registered_drivers() -> list[str]:
    configure()
    return [_c["GDALGetDriverShortName"](_c["GDALGetDriver"](i)).decode() for i in range(_c["GDALGetDriverCount"]())]


def configure() -> None:
    """Set GDAL's options and keep only the allowed drivers, once per process (idempotent, thread-safe). Called
    when Django starts (``DatasetsConfig.ready``) and again before every open of a user's file."""
    global _configured
    if _configured:
        return
    with _lock:
        if _configured:
            return
        _bind()
        for key, value in CONFIG.items():
            _c["CPLSetConfigOption"](key.encode(), value.encode())
        Driver.ensure_registered()
        for index in reversed(range(_c["GDALGetDriverCount"]())):
            driver = _c["GDALGetDriver"](index)
            if _c["GDALGetDriverShortName"](driver).decode() not in KEPT_DRIVERS:
                _c["GDALDeregisterDriver"](driver)
        _configured = True


def _open(name: str, sibling: str) -> GDALRaster:
    pointer = _c["GDALOpenEx"](
        name.encode(),
        GDAL_OF_RASTER,
        ctypes.cast(strings(ALLOWED_DRIVERS), ctypes.c_void_p),
        None,
        ctypes.cast(strings([sibling]), ctypes.c_void_p),
    )
    if not pointer:
        raise RasterRefused("not a GeoTIFF the platform can read")
    return GDALRaster(ctypes.c_void_p(pointer))


def open_raster(path: Path | str) -> GDALRaster:
    """A user's raster file at ``path``, opened read-only as a GeoTIFF and nothing else, with no side file and no
    network (see the module's docstring). RasterRefused says why not, in words for users."""
    configure()
    text = os.fspath(path)
    if text.startswith("/vsi") or not Path(text).is_file():
        raise RasterRefused("not a regular file")
    resolved = str(Path(text).resolve())
    return _open(resolved, Path(resolved).name)


class MemoryRaster:
    """A user's raster held in memory (bytes of an upload), opened like ``open_raster``; a context manager that
    frees GDAL's in-memory file on exit."""

    def __init__(self, content: bytes):
        configure()
        self._buffer = ctypes.create_string_buffer(bytes(content), len(content))
        self._name = f"/vsimem/dumpsite-{uuid.uuid4().hex}.tif"
        handle = _c["VSIFileFromMemBuffer"](
            self._name.encode(), ctypes.cast(self._buffer, ctypes.c_void_p), len(content), 0
        )
        if not handle:
            raise RasterRefused("not readable")
        _c["VSIFCloseL"](handle)
        self.raster: GDALRaster | None = None

    def __enter__(self) -> GDALRaster:
        try:
            self.raster = _open(self._name, self._name.rsplit("/", 1)[-1])
        except BaseException:
            _c["VSIUnlink"](self._name.encode())
            raise
        return self.raster

    def __exit__(self, *exc) -> None:
        raster, self.raster = self.raster, None
        if raster is not None:
            raster.__del__()  # GDALClose (and GeoDjango unlinks the /vsimem/ file) before the buffer goes
            raster._ptr = None  # type: ignore[attr-defined]  # GeoDjango's handle: closed above, never again
        _c["VSIUnlink"](self._name.encode())


__all__ = ["ALLOWED_DRIVERS", "GDALException", "MemoryRaster", "RasterRefused", "configure", "open_raster"]


def bucket_object(name: str, *, secrets: bool = True) -> BucketObject:
    """The site's bucket object of the stored file ``name``, as GDAL reads it (``/vsis3/``); without the credentials
    (``secrets=False``) for a job file a child completes from its environment."""
    bucket = site_bucket()
    return BucketObject(
        endpoint_url=bucket.endpoint_url,
        region=bucket.region,
        bucket=bucket.name,
        key=bucket_key(name),
        access_key=bucket.access_key if secrets else "",
        secret_key=bucket.secret_key if secrets else "",
        virtual_hosting=bucket.addressing_style == "virtual",
    )


def stored_raster(name: str) -> Raster:
    """An orthophoto kept in the storage, opened for windowed reads under the policy: the local folder's file, or
    the bucket's object read by ranged GETs (its ``/vsis3/`` name is the platform's, never a user's text)."""
    if in_bucket():
        return Raster.in_bucket(bucket_object(name))
    return Raster(local_file(name))
