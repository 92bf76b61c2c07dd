"""Whole orthophotos kept with a dataset for detection runs: stored once by content (a second upload of the same
file to the same dataset is the row already there), checked before a row exists (a GeoTIFF and nothing else, 8-bit
grey, RGB or RGBA, at most ``DUMPSITE_ORTHOPHOTO_MAX_PIXELS`` and ``DUMPSITE_MAX_ORTHOPHOTO_BYTES``), with its
georeferencing read once (CRS, geotransform with its rotation terms, ground pixel size, WGS 84 footprint). A large
drone photo without georeferencing is kept too, marked as such: detections on it are in pixel coordinates.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib.gis.gdal import GDALException, SpatialReference
from django.contrib.gis.geos import GEOSException, Polygon
from django.db import IntegrityError, transaction

from access.rules import Actor, require
from audit.services import audit_record
from core.errors import ApplicationError
from core.storage import storage_errors, store_file

from .georef import window_footprint
from .models import Dataset, Orthophoto, orthophoto_upload_to
from .tiling import open_orthophoto

CHUNK = 1 << 20
logger = logging.getLogger(__name__)


def footprint_wgs84(geotransform: list, srs: SpatialReference, width: int, height: int) -> Polygon | None:
    """The whole raster's WGS 84 outline (None where its CRS cannot be transformed)."""
    try:
        return window_footprint(geotransform, srs, 0, 0, width, height)[0]
    except (GDALException, GEOSException):
        return None


def pixel_size_m(geotransform: list, srs: SpatialReference) -> float | None:
    """The ground size of a pixel, where the CRS's unit is the metre (else unknown)."""
    if not srs.projected or abs((srs.linear_units or 0) - 1.0) > 1e-9:
        return None
    return math.sqrt(abs(geotransform[1] * geotransform[5] - geotransform[2] * geotransform[4]))


def _copy_hashed(source, target: Path) -> tuple[str, int]:
    """Copy an upload (Django ``UploadedFile``) or a path to ``target``, hashing on the way; refused past the size
    limit before the whole of it is written."""
    limit = settings.DUMPSITE_MAX_ORTHOPHOTO_BYTES
    digest, size = hashlib.sha256(), 0
    chunks = source.chunks(CHUNK) if hasattr(source, "chunks") else _file_chunks(Path(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "xb") as out:
        for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise ApplicationError(
                    f"The orthophoto is larger than {limit:,} bytes (DUMPSITE_MAX_ORTHOPHOTO_BYTES).",
                    {"orthophoto": "too large", "limit": "DUMPSITE_MAX_ORTHOPHOTO_BYTES"},
                )
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


def _file_chunks(path: Path):
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def orthophoto_store(*, dataset: Dataset, source, name: str, created_by: Actor = None) -> Orthophoto:
    """Keep the orthophoto ``source`` (an upload or a file path) with ``dataset``; the user must be allowed to
    change the dataset. Nothing is left behind when it is refused."""
    require(created_by, "datasets.change_dataset", dataset, message=f"You may not add orthophotos to {dataset}.")
    label = Path(str(name or "orthophoto.tif")).name[:255]
    stub = Orthophoto(dataset=dataset)
    # Checked in this process's temporary files (where Django keeps large uploads), stored once accepted.
    folder = Path(tempfile.mkdtemp(prefix="orthophoto-", dir=settings.FILE_UPLOAD_TEMP_DIR))
    staging = folder / "upload.tif"
    try:
        sha, size = _copy_hashed(source, staging)
        existing = Orthophoto.objects.filter(dataset=dataset, sha256=sha).first()
        if existing is not None:
            return existing
        ortho = open_orthophoto(staging, label, georeferenced=False)
        stored = orthophoto_upload_to(stub, f"{sha}.tif")
        georeferenced = ortho.srs is not None
        row = Orthophoto(
            dataset=dataset,
            name=label,
            sha256=sha,
            size_bytes=size,
            width=ortho.width,
            height=ortho.height,
            bands=len(ortho.raster.bands),
            georeferenced=georeferenced,
            srid=(ortho.srs.srid if ortho.srs else None),
            srs_wkt=(ortho.srs.wkt if ortho.srs else ""),
            geotransform=(list(ortho.geotransform) if georeferenced else None),
            pixel_size_m=(pixel_size_m(ortho.geotransform, ortho.srs) if ortho.srs else None),
            footprint=(
                footprint_wgs84(ortho.geotransform, ortho.srs, ortho.width, ortho.height) if ortho.srs else None
            ),
            created_by=created_by,
        )
        del ortho  # GDAL's handle on the staged file, before it moves
        try:
            store_file(staging, stored, move=True)
        except storage_errors() as exc:
            logger.exception("orthophoto %s: the storage refused it", label)
            raise ApplicationError(
                f"The storage did not take the orthophoto ({type(exc).__name__}); nothing was added. Upload it again "
                "once the storage answers."
            ) from None
        row.file.name = stored
        try:
            with transaction.atomic():
                row.save()
        except IntegrityError:  # the same file stored by a concurrent upload a moment ago
            return Orthophoto.objects.get(dataset=dataset, sha256=sha)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    audit_record(action="orthophoto added", obj=dataset, actor=created_by, orthophoto=row.pk, name=label)
    return row
