"""Uploads imported by a worker: COCO zips, and orthophotos with their annotated sites to cut into tiles. Checked
at once where they arrive (a refused upload never becomes an import and leaves nothing), then kept in the storage
(``imports/<key>/``: a random key, no user text) and imported by a worker with progress and the importer's item
report. The worker reads them in place from the local folder, or fetches them from a bucket into its own scratch
(``<DUMPSITE_WORK_ROOT>/imports/<key>/``): the web and the workers share no folder.

The upload's stored folder and the worker's scratch are removed when the import ends, however it ends; an import
whose worker stops reporting is failed by the workers' agent (``dataset_imports_fail_stale``).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from access.rules import can, require, visible
from core.errors import ApplicationError
from core.host_cache import host_scratch
from core.storage import copy_within, delete_stored, storage_errors, store_file

from .models import Dataset, DatasetImport
from .services import validate_dataset_name
from .sites import read_annotations, read_sites_file
from .tiling import TilingOptions, check_window_count, open_orthophoto, sites_per_orthophoto
from .zips import ZipLimits, check_zip

logger = logging.getLogger(__name__)
Status = DatasetImport.Status
TASK = "datasets.tasks.execute_import"
ARCHIVE = "archive.zip"
SITES = "annotations.geojson"
NEGATIVES = "negatives.geojson"
MAX_REPORTED = 10_000  # rejected items kept in the report (the count is always whole)


@dataclass(frozen=True)
class StoredUpload:
    """A file the platform keeps already (a stored orthophoto), given to an import instead of an upload: the store
    copies it (no byte passes through the web process) and the worker checks it."""

    name: str
    size: int
    label: str


def imports_root() -> Path:
    """The workers' scratch of imports (each worker's own disk)."""
    return host_scratch("imports")


def stored_upload(key: str, file: str = "") -> str:
    """The stored name of an import's folder (``file`` empty) or of one of its files."""
    return f"imports/{key}/{file}" if file else f"imports/{key}"


@contextmanager
def _staging() -> Iterator[Path]:
    """A private folder of this process's temporary files for an upload being checked (where Django keeps large
    uploads already, so they move in by a rename); removed whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=settings.FILE_UPLOAD_TEMP_DIR))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _storage_refusal(key: str) -> Iterator[None]:
    """A storage that refuses the upload's files refuses the upload, saying so (its address goes to the log)."""
    try:
        yield
    except storage_errors() as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        logger.exception("import upload %s: the storage refused it", key)
        raise ApplicationError(
            f"The storage did not take the upload ({type(exc).__name__}); nothing was imported. Upload again once "
            "it answers."
        ) from None


def _keep(folder: Path, key: str, files: list[str]) -> None:
    """Store the checked upload's ``files`` under the import's key (whole or the import is refused)."""
    with _storage_refusal(key):
        for file in files:
            store_file(folder / file, stored_upload(key, file), move=True)


def discard_upload(key: str) -> None:
    """Remove an import's stored upload; a storage that does not answer is logged (what it keeps is orphaned)."""
    try:
        delete_stored(stored_upload(key))
    except storage_errors():
        logger.exception("import upload %s: not removed from the storage", key)


def _store(upload, target: Path) -> int:
    """Write the upload to ``target`` chunk by chunk (or move Django's temporary file there): never in memory."""
    temporary = getattr(upload, "temporary_file_path", None)
    if temporary is not None:
        shutil.move(temporary(), target)
    else:
        with open(target, "xb") as out:
            for chunk in upload.chunks() if hasattr(upload, "chunks") else iter(lambda: upload.read(1 << 20), b""):
                out.write(chunk)
    return target.stat().st_size


def _check_target(*, dataset, dataset_name, user) -> None:
    if (dataset is None) == (not dataset_name):
        raise ApplicationError(
            "Name a new dataset or choose an existing one (not both).", {"dataset": "one of dataset, dataset_name"}
        )
    if dataset is None:
        require(user, "datasets.add_dataset", message="You may not create datasets.")
        validate_dataset_name(dataset_name)
    else:
        require(user, "datasets.change_dataset", dataset, message=f"You may not change dataset {dataset.name!r}.")


def _queue(**fields) -> DatasetImport:
    with transaction.atomic():
        job = DatasetImport.objects.create(**fields)
        transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _display_name(name) -> str:
    return os.path.basename(str(name or "").replace("\\", "/"))[:255]


def dataset_import_create(
    *,
    upload,
    archive_name: str = "",
    dataset: Dataset | None = None,
    dataset_name: str | None = None,
    add_classes: bool = False,
    coco_file: str | None = None,
    user,
) -> DatasetImport:
    """Queue the import of an uploaded COCO zip into a new dataset (``dataset_name``) or into ``dataset``. The
    user's permission, the target and every member of the archive are checked first; a refused upload leaves no
    file and no import behind."""
    _check_target(dataset=dataset, dataset_name=dataset_name, user=user)
    if coco_file is not None and (not isinstance(coco_file, str) or len(coco_file) > 500):
        raise ApplicationError("coco_file names one file inside the archive.", {"coco_file": "invalid"})
    if upload is None:
        raise ApplicationError("Attach the zip archive.", {"archive": "missing"})
    key = secrets.token_hex(12)
    try:
        with _staging() as folder:
            size = _store(upload, folder / ARCHIVE)
            if size > settings.DUMPSITE_ZIP_MAX_BYTES:
                raise ApplicationError(
                    f"The archive is {size:,} bytes; at most {settings.DUMPSITE_ZIP_MAX_BYTES:,} are accepted.",
                    {"archive": "too large"},
                )
            contents = check_zip(folder / ARCHIVE, ZipLimits.from_settings(), coco_file=coco_file or None)
            _keep(folder, key, [ARCHIVE])
        return _queue(
            key=key,
            dataset=dataset,
            new_dataset_name=dataset_name or "",
            add_classes=bool(add_classes),
            coco_file=contents.coco_file,
            layout=contents.layout,
            archive_name=_display_name(archive_name),
            archive_bytes=size,
            archive_members=len(contents.files),
            created_by=user,
        )
    except BaseException:
        discard_upload(key)
        raise


def orthophoto_tiling_create(
    *,
    orthophotos: list,
    annotations,
    options: dict | None = None,
    dataset: Dataset | None = None,
    dataset_name: str | None = None,
    add_classes: bool = False,
    user,
    negatives=None,
    source: dict | None = None,
) -> DatasetImport:
    """Queue the tiling of uploaded orthophotos (GeoTIFFs) with their annotated sites (a GeoJSON file) into a new
    dataset or ``dataset``. Checked first: the user and target, the options, each orthophoto's georeferencing and
    bands, the annotations and that they overlap an orthophoto; a refused upload leaves nothing behind.
    ``negatives``: a GeoJSON of false alarms whose tiles are kept as hard negatives; ``source``: where the images
    come from (kept on each)."""
    _check_target(dataset=dataset, dataset_name=dataset_name, user=user)
    checked = TilingOptions.checked(**(options or {}))
    if not orthophotos:
        raise ApplicationError("Attach at least one orthophoto (GeoTIFF).", {"orthophoto": "missing"})
    if annotations is None:
        raise ApplicationError("Attach the annotated sites (GeoJSON).", {"annotations": "missing"})
    key = secrets.token_hex(12)
    try:
        with _staging() as folder:
            files, names, size = _stage_orthophotos(folder, key, orthophotos)
            _store(annotations, folder / SITES)
            if negatives is not None:
                _store(negatives, folder / NEGATIVES)
            found = read_annotations(read_sites_file(folder / SITES), class_property=checked.class_property)
            uploaded = [(f, name) for f, name in zip(files, names, strict=True) if (folder / f).is_file()]
            orthos = [open_orthophoto(folder / f, name) for f, name in uploaded]
            check_window_count(orthos, checked)
            if len(orthos) == len(files):  # a stored orthophoto is checked by the worker, which fetches it
                sites_per_orthophoto(orthos, found)
            del orthos  # GDAL's handles on the staged files, before they move
            _keep(folder, key, [f for f, _ in uploaded] + [SITES] + ([NEGATIVES] if negatives is not None else []))
        return _queue(
            key=key,
            kind=DatasetImport.Kind.ORTHOPHOTO,
            dataset=dataset,
            new_dataset_name=dataset_name or "",
            add_classes=bool(add_classes),
            parameters={
                "files": files,
                "names": names,
                "options": checked.as_dict(),
                **({"negatives": NEGATIVES} if negatives is not None else {}),
                **({"source": source} if source else {}),
            },
            layout=f"{len(files)} orthophoto(s), {len(found.sites)} sites",
            archive_name=", ".join(names)[:255],
            archive_bytes=size,
            archive_members=len(files),
            created_by=user,
        )
    except BaseException:
        discard_upload(key)
        raise


def _stage_orthophotos(folder: Path, key: str, orthophotos: list) -> tuple[list[str], list[str], int]:
    """Uploads written to ``folder``; stored orthophotos (``StoredUpload``) copied by the store under the import's
    key. Returns the files' names in the import, their labels and their total size (bounded)."""
    files, names, size = [], [], 0
    for index, upload in enumerate(orthophotos):
        stored = f"{index}.tif"
        if isinstance(upload, StoredUpload):
            try:
                with _storage_refusal(key):
                    copy_within(upload.name, stored_upload(key, stored))
            except FileNotFoundError:
                raise ApplicationError(f"{upload.label} is no longer stored.", {"orthophoto": upload.label}) from None
            size += upload.size
        else:
            size += _store(upload, folder / stored)
        if size > settings.DUMPSITE_MAX_ORTHOPHOTO_BYTES:
            raise ApplicationError(
                f"The orthophotos exceed {settings.DUMPSITE_MAX_ORTHOPHOTO_BYTES:,} bytes "
                "(DUMPSITE_MAX_ORTHOPHOTO_BYTES).",
                {"orthophoto": "too large"},
            )
        files.append(stored)
        names.append(getattr(upload, "label", "") or _display_name(getattr(upload, "name", "")) or stored)
    return files, names, size


def _enqueue(import_id: int) -> None:
    # django-q2 sets up its cluster configuration on import: only where it is used
    from django_q.tasks import async_task

    async_task(TASK, import_id, task_name=f"dataset-import-{import_id}", group="imports")


def may_import(user) -> bool:
    """Whether ``user`` may upload at all: create datasets, or change at least one."""
    return can(user, "datasets.add_dataset") or visible(user, "datasets.change_dataset", Dataset.objects.all()).exists()
