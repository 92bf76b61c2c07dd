"""GDAL as the platform allows it, without Django: the policy every open of a user's raster follows, and windowed
reading of an orthophoto for the detection child (which runs no Django, so it cannot use GeoDjango's wrapper).

The policy (``datasets.rasters`` applies the same constants through GeoDjango in Django processes):

- **Drivers**: every driver but GTiff (the orthophotos' format) and MEM is deregistered once per process, and a file
  is opened naming GTiff as its one allowed driver: a VRT, a WMS XML or an HDF5 file is "not a GeoTIFF".
- **No side files**: the sibling list GDAL is given holds the file alone; PAM (``.aux.xml``) and world files are off.
- **No network**: ``/vsicurl/`` and its kin accept no file name, with short time-outs and no retries; ``/vsi``
  paths are refused. The one exception is an orthophoto in the site's own bucket (:meth:`Raster.in_bucket`): its
  ``/vsis3/`` name is built by the platform, and GDAL may reach that one name, from one thread, while it is open.
- **Bounded**: GDAL's block cache is capped (``GDAL_CACHEMAX``, megabytes).

Reading goes through ``GDALDatasetRasterIOEx`` straight into a NumPy buffer, one window at a time, pixel-interleaved.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALLOWED_DRIVERS = ("GTiff",)  # what a user's file may be read as
KEPT_DRIVERS = ("GTiff", "MEM")  # MEM: rasters the platform builds in memory itself (tests, benchmarks)
CACHE_MB = 128
CONFIG = {
    # No side files: PAM (.aux.xml), world files and .tab files never read; no directory listing on open.
    "GDAL_PAM_ENABLED": "NO",
    "GDAL_GEOREF_SOURCES": "INTERNAL",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # No network: /vsicurl/, /vsis3/ and their kin accept no file name, and give up at once.
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".dumpsite-no-network",
    "GDAL_HTTP_TIMEOUT": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "1",
    "GDAL_HTTP_MAX_RETRY": "0",
    # Bounded memory for windowed reads.
    "GDAL_CACHEMAX": str(CACHE_MB),
}
GDAL_OF_RASTER, GDAL_OF_VERBOSE_ERROR = 0x02, 0x40
GDT_BYTE = 1
GCI_ALPHA = 6
GF_READ = 0

_lock = threading.Lock()
_lib: Any = None


class RasterRefused(Exception):
    """The file is not a raster the platform reads; the message is for users (no GDAL text, no server path)."""


def strings(items: list[str] | tuple[str, ...]) -> ctypes.Array:
    """A NULL-terminated ``char **`` of ``items`` (GDAL's string lists)."""
    array = (ctypes.c_char_p * (len(items) + 1))()
    array[:-1] = [item.encode() for item in items]
    return array


SIGNATURES: dict[str, tuple[Any, list]] = {
    "GDALAllRegister": (None, []),
    "GDALOpenEx": (
        ctypes.c_void_p,
        [ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p],
    ),
    "GDALClose": (None, [ctypes.c_void_p]),
    "GDALSetCacheMax64": (None, [ctypes.c_int64]),
    "GDALGetCacheMax64": (ctypes.c_int64, []),
    "GDALGetDriverCount": (ctypes.c_int, []),
    "GDALGetDriver": (ctypes.c_void_p, [ctypes.c_int]),
    "GDALGetDriverShortName": (ctypes.c_char_p, [ctypes.c_void_p]),
    "GDALDeregisterDriver": (None, [ctypes.c_void_p]),
    "CPLSetConfigOption": (None, [ctypes.c_char_p, ctypes.c_char_p]),
    "CPLSetThreadLocalConfigOption": (None, [ctypes.c_char_p, ctypes.c_char_p]),
    "VSICurlPartialClearCache": (None, [ctypes.c_char_p]),
    "GDALGetRasterXSize": (ctypes.c_int, [ctypes.c_void_p]),
    "GDALGetRasterYSize": (ctypes.c_int, [ctypes.c_void_p]),
    "GDALGetRasterCount": (ctypes.c_int, [ctypes.c_void_p]),
    "GDALGetRasterBand": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]),
    "GDALGetRasterDataType": (ctypes.c_int, [ctypes.c_void_p]),
    "GDALGetRasterNoDataValue": (ctypes.c_double, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]),
    "GDALGetRasterColorInterpretation": (ctypes.c_int, [ctypes.c_void_p]),
    "GDALGetGeoTransform": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_double)]),
    "GDALGetProjectionRef": (ctypes.c_char_p, [ctypes.c_void_p]),
    "GDALDatasetRasterIOEx": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        + [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        + [ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p],
    ),
}
GRIORA_NEAREST, GRIORA_BILINEAR, GRIORA_AVERAGE = 0, 1, 5


class RasterIOExtraArg(ctypes.Structure):
    """GDAL's ``GDALRasterIOExtraArg`` (version 1): how a read that changes the size resamples."""

    _fields_ = [
        ("nVersion", ctypes.c_int),
        ("eResampleAlg", ctypes.c_int),
        ("pfnProgress", ctypes.c_void_p),
        ("pProgressData", ctypes.c_void_p),
        ("bFloatingPointWindowValidity", ctypes.c_int),
        ("dfXOff", ctypes.c_double),
        ("dfYOff", ctypes.c_double),
        ("dfXSize", ctypes.c_double),
        ("dfYSize", ctypes.c_double),
    ]


def library() -> Any:
    """libgdal (the one GeoDjango loads: the system's), bound and configured once per process."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            name = os.environ.get("GDAL_LIBRARY_PATH") or ctypes.util.find_library("gdal")
            if not name:
                raise RasterRefused("GDAL is not installed")
            lib = ctypes.CDLL(name)
            for function, (restype, argtypes) in SIGNATURES.items():
                getattr(lib, function).restype = restype
                getattr(lib, function).argtypes = argtypes
            for key, value in CONFIG.items():
                lib.CPLSetConfigOption(key.encode(), value.encode())
            lib.GDALAllRegister()
            for index in reversed(range(lib.GDALGetDriverCount())):
                driver = lib.GDALGetDriver(index)
                if lib.GDALGetDriverShortName(driver).decode() not in KEPT_DRIVERS:
                    lib.GDALDeregisterDriver(driver)
            _lib = lib
    return _lib


def limit_block_cache(megabytes: int) -> None:
    """Cap this process's GDAL block cache below the policy's ``CACHE_MB`` (never above it)."""
    library().GDALSetCacheMax64(min(megabytes, CACHE_MB) * 2**20)


# The environment variables that give a child the site's bucket credentials (its job file names the object only).
BUCKET_KEY_ENV, BUCKET_SECRET_ENV = "DUMPSITE_BUCKET_ACCESS_KEY", "DUMPSITE_BUCKET_SECRET_KEY"


@dataclass(frozen=True)
class BucketObject:
    """An object of the site's bucket, named by the platform (a stored file's key, never a user's text), with what
    GDAL needs to read it: the store's address and the site's credentials."""

    endpoint_url: str  # http(s)://host:port
    region: str
    bucket: str
    key: str
    access_key: str
    secret_key: str
    virtual_hosting: bool = False

    @classmethod
    def from_job(cls, spec: dict) -> BucketObject:
        """The object a job file names, with the credentials from this process's environment."""
        fields = {
            **spec,
            "access_key": os.environ.get(BUCKET_KEY_ENV, ""),
            "secret_key": os.environ.get(BUCKET_SECRET_ENV, ""),
        }
        return cls(**fields)

    @property
    def vsi_path(self) -> str:
        return f"/vsis3/{self.bucket}/{self.key}"

    def options(self) -> dict[str, str]:
        """Thread-local GDAL options for reading this one object: its file name is the only one /vsis3/ accepts,
        with the site's store and credentials, time-outs and retries fit for a long read (the global policy gives
        the network one second and no retry)."""
        scheme, _, address = self.endpoint_url.partition("://")
        return {
            "CPL_VSIL_CURL_ALLOWED_FILENAME": self.vsi_path,
            "AWS_S3_ENDPOINT": address.rstrip("/"),
            "AWS_HTTPS": "YES" if scheme == "https" else "NO",
            "AWS_VIRTUAL_HOSTING": "TRUE" if self.virtual_hosting else "FALSE",
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_SESSION_TOKEN": "",
            "AWS_NO_SIGN_REQUEST": "NO",
            "CPL_AWS_CREDENTIALS_FILE": "",  # never ~/.aws of the host
            "AWS_CONFIG_FILE": "",
            "GDAL_HTTP_TIMEOUT": "60",
            "GDAL_HTTP_CONNECTTIMEOUT": "10",
            "GDAL_HTTP_MAX_RETRY": "3",
            "GDAL_HTTP_RETRY_DELAY": "1",
        }


class Raster:
    """A user's GeoTIFF opened read-only under the policy, for windowed reads; a context manager that closes it."""

    def __init__(self, path: str | Path):
        text = os.fspath(path)
        if text.startswith("/vsi") or not Path(text).is_file():
            raise RasterRefused("not a regular file")
        resolved = str(Path(text).resolve())
        self._options: dict[str, str] = {}
        self._open(resolved, Path(resolved).name)

    @classmethod
    def in_bucket(cls, obj: BucketObject) -> Raster:
        """An orthophoto kept in the site's bucket, read by window with ranged GETs (``/vsis3/``): GDAL may reach
        that one object and nothing else, and only from this thread while the raster is open."""
        raster = cls.__new__(cls)
        raster._options = obj.options()
        raster._set_options(raster._options)
        try:
            raster._open(obj.vsi_path, obj.vsi_path.rsplit("/", 1)[-1])
        except BaseException:
            library().VSICurlPartialClearCache(obj.vsi_path.encode())
            raster._set_options(dict.fromkeys(raster._options))
            raise
        return raster

    def _set_options(self, options: Mapping[str, str | None]) -> None:
        lib = library()
        for key, value in options.items():
            lib.CPLSetThreadLocalConfigOption(key.encode(), None if value is None else value.encode())

    def _open(self, name: str, sibling: str) -> None:
        lib = library()
        handle = lib.GDALOpenEx(
            name.encode(),
            GDAL_OF_RASTER,
            ctypes.cast(strings(ALLOWED_DRIVERS), ctypes.c_void_p),
            None,
            ctypes.cast(strings([sibling]), ctypes.c_void_p),
        )
        if not handle:
            raise RasterRefused("not a GeoTIFF the platform can read")
        self._lib, self._handle = lib, handle
        self.width = lib.GDALGetRasterXSize(handle)
        self.height = lib.GDALGetRasterYSize(handle)
        bands = [lib.GDALGetRasterBand(handle, i + 1) for i in range(lib.GDALGetRasterCount(handle))]
        self.band_types = [lib.GDALGetRasterDataType(band) for band in bands]
        self.alpha_band = next(
            (i + 1 for i, band in enumerate(bands) if lib.GDALGetRasterColorInterpretation(band) == GCI_ALPHA), None
        )
        found = ctypes.c_int(0)
        nodata = lib.GDALGetRasterNoDataValue(bands[0], ctypes.byref(found)) if bands else 0.0
        self.nodata: float | None = float(nodata) if found.value else None
        transform = (ctypes.c_double * 6)()
        has_transform = lib.GDALGetGeoTransform(handle, transform) == 0
        self.geotransform: list[float] | None = list(transform) if has_transform else None
        self.projection: str = (lib.GDALGetProjectionRef(handle) or b"").decode()

    @property
    def colour_bands(self) -> list[int]:
        """The bands read as colour: 1, 2, 3 (an RGB or RGBA image), or 1 three times (grey, grey with alpha)."""
        colour = [i + 1 for i in range(len(self.band_types)) if i + 1 != self.alpha_band]
        return colour[:3] if len(colour) >= 3 else [colour[0]] * 3

    def read(
        self, x: int, y: int, width: int, height: int, bands: list[int], size: tuple[int, int] | None = None
    ) -> Any:
        """The window's pixels as a (height, width, len(bands)) uint8 array; resampled to ``size`` (width, height)
        where given (averaging where it shrinks, GDAL's overviews used where the file has them; bilinear where it
        enlarges)."""
        # NumPy loads where pixels are read for a model: the child, never the web process
        import numpy as np

        out_width, out_height = size or (width, height)
        out = np.empty((out_height, out_width, len(bands)), dtype=np.uint8)
        self._read_into(out.ctypes.data_as(ctypes.c_void_p), (x, y, width, height), (out_width, out_height), bands)
        return out

    def read_bytes(self, x: int, y: int, width: int, height: int, bands: list[int], size: tuple[int, int]) -> bytes:
        """The window resampled by GDAL to ``size`` (width, height), pixel-interleaved bytes: a picture for
        Pillow, of the size shown, without NumPy and without holding the window at full size."""
        out_width, out_height = size
        out = ctypes.create_string_buffer(out_width * out_height * len(bands))
        self._read_into(ctypes.cast(out, ctypes.c_void_p), (x, y, width, height), size, bands)
        return out.raw

    def _read_into(
        self, target: Any, window: tuple[int, int, int, int], size: tuple[int, int], bands: list[int]
    ) -> None:
        x, y, width, height = window
        out_width, out_height = size
        band_map = (ctypes.c_int * len(bands))(*bands)
        if (out_width, out_height) == (width, height):
            algorithm = GRIORA_NEAREST  # pixels as they are
        else:  # averaging where the read shrinks (GDAL takes an overview where the file has one), else bilinear
            algorithm = GRIORA_AVERAGE if out_width < width else GRIORA_BILINEAR
        extra = RasterIOExtraArg(nVersion=1, eResampleAlg=algorithm)
        status = self._lib.GDALDatasetRasterIOEx(
            self._handle,
            GF_READ,
            x,
            y,
            width,
            height,
            target,
            out_width,
            out_height,
            GDT_BYTE,
            len(bands),
            band_map,
            len(bands),
            out_width * len(bands),
            1,
            ctypes.byref(extra),
        )
        if status != 0:
            raise RasterRefused(f"pixels at {x},{y} ({width} x {height}) are unreadable")

    def close(self) -> None:
        if self._handle:
            self._lib.GDALClose(self._handle)
            self._handle = None
        if self._options:
            # What GDAL cached of the object (its size, its blocks) goes with it: the next open asks the store again.
            self._lib.VSICurlPartialClearCache(self._options["CPL_VSIL_CURL_ALLOWED_FILENAME"].encode())
            self._set_options(dict.fromkeys(self._options))
            self._options = {}

    def __enter__(self) -> Raster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
