"""Uploads imported by a worker: COCO zips, and orthophotos with their annotated sites to cut into tiles. Stored on
the shared work root and checked at once (a refused upload never becomes an import), then imported by a worker
with progress and the importer's item report.

The archive's folder (``<TRAINING_WORK_ROOT>/imports/<key>/``, mode 0700) is removed when the import ends, however
it ends; an import whose worker stops reporting is failed by the workers' agent (``dataset_imports_fail_stale``).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connections, transaction
from django.utils import timezone

from access.rules import can, require, visible
from core.db import DATABASE_ERRORS, drop_broken_connections, first_line, when_database_is_back
from core.errors import ApplicationError

from .coco_import import import_coco_zip
from .models import Dataset, DatasetImport
from .services import validate_dataset_name
from .sites import read_annotations, read_sites_file
from .tiling import TilingOptions, check_window_count, open_orthophoto, sites_per_orthophoto, tile_orthophotos
from .zips import ZipLimits, check_zip

logger = logging.getLogger(__name__)
Status = DatasetImport.Status
TASK = "datasets.tasks.execute_import"
ARCHIVE = "archive.zip"
SITES = "annotations.geojson"
NEGATIVES = "negatives.geojson"
MAX_REPORTED = 10_000  # rejected items kept in the report (the count is always whole)


def imports_root() -> Path:
    return Path(settings.TRAINING_WORK_ROOT) / "imports"


def _store(upload, target: Path) -> int:
    """Write the upload to ``target`` chunk by chunk (or move Django's temporary file there): never in memory. A
    ``Path`` is a file the platform keeps already (a stored orthophoto): linked where the file system allows."""
    if isinstance(upload, Path):
        try:
            os.link(upload, target)
        except OSError:
            shutil.copyfile(upload, target)
        return target.stat().st_size
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


def _upload_folder() -> tuple[str, Path]:
    key = secrets.token_hex(12)
    folder = imports_root() / key
    folder.mkdir(parents=True, mode=0o700)
    return key, folder


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
    key, folder = _upload_folder()
    try:
        size = _store(upload, folder / ARCHIVE)
        if size > settings.DUMPSITE_ZIP_MAX_BYTES:
            raise ApplicationError(
                f"The archive is {size:,} bytes; at most {settings.DUMPSITE_ZIP_MAX_BYTES:,} are accepted.",
                {"archive": "too large"},
            )
        contents = check_zip(folder / ARCHIVE, ZipLimits.from_settings(), coco_file=coco_file or None)
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
        shutil.rmtree(folder, ignore_errors=True)
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
    key, folder = _upload_folder()
    try:
        files, names, size = [], [], 0
        for index, upload in enumerate(orthophotos):
            stored = f"{index}.tif"
            size += _store(upload, folder / stored)
            if size > settings.DUMPSITE_MAX_ORTHOPHOTO_BYTES:
                raise ApplicationError(
                    f"The orthophotos exceed {settings.DUMPSITE_MAX_ORTHOPHOTO_BYTES:,} bytes "
                    "(DUMPSITE_MAX_ORTHOPHOTO_BYTES).",
                    {"orthophoto": "too large"},
                )
            files.append(stored)
            names.append(_display_name(getattr(upload, "name", "")) or stored)
        _store(annotations, folder / SITES)
        if negatives is not None:
            _store(negatives, folder / NEGATIVES)
        found = read_annotations(read_sites_file(folder / SITES), class_property=checked.class_property)
        orthos = [open_orthophoto(folder / f, name) for f, name in zip(files, names, strict=True)]
        check_window_count(orthos, checked)
        sites_per_orthophoto(orthos, found)
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
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _enqueue(import_id: int) -> None:
    # django-q2 sets up its cluster configuration on import: only where it is used
    from django_q.tasks import async_task

    async_task(TASK, import_id, task_name=f"dataset-import-{import_id}", group="imports")


class ProgressReporter:
    """Writes the import's progress (and a heartbeat) every ``interval`` seconds from a thread of its own, so on a
    database connection of its own: the import's transaction stays open while its progress is seen by all."""

    def __init__(self, import_id: int, interval: float):
        self.import_id, self.interval = import_id, interval
        self.done = self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"import-{import_id}-progress", daemon=True)

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _write(self) -> None:
        DatasetImport.objects.filter(pk=self.import_id, status=Status.RUNNING).update(
            items_done=self.done, items_total=self.total, heartbeat_at=timezone.now()
        )

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    self._write()
                except Exception:  # noqa: BLE001 - progress is best effort; the import goes on
                    logger.warning("import %s: progress not written", self.import_id, exc_info=True)
                    drop_broken_connections()  # the next write reconnects (a database restart)
        finally:
            connections.close_all()  # this thread's connections only


def dataset_import_execute(*, import_id: int) -> str:
    """The worker's part: queued -> running (one winner), import the archive, record the report; the archive's
    folder is removed in every case."""
    now = timezone.now()
    claimed = DatasetImport.objects.filter(pk=import_id, status=Status.QUEUED).update(
        status=Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker_process=f"{settings.DUMPSITE_HOST_ID}:{os.getpid()}"[:200],
    )
    if not claimed:
        return DatasetImport.objects.filter(pk=import_id).values_list("status", flat=True).first() or "missing"
    job = DatasetImport.objects.select_related("dataset", "created_by").get(pk=import_id)
    folder = imports_root() / job.key
    target: dict[str, Any] = {
        "dataset_name": None if job.dataset_id else job.new_dataset_name,
        "dataset": job.dataset,
        "add_classes": job.add_classes,
        "created_by": job.created_by,
    }
    try:
        if job.created_by_id is None:
            raise ApplicationError(
                "The account that uploaded this was deleted before the import ran; nothing was imported."
            )
        if not folder.is_dir():
            logger.error("import %s: %s is not in this worker's work root", import_id, folder)
            raise ApplicationError(
                "The upload is not in this worker's work root: the web and the workers must share it "
                "(DUMPSITE_WORK_ROOT; the worker's log names the folder). Upload again."
            )
        with ProgressReporter(import_id, settings.TRAINING_PROGRESS_INTERVAL) as reporter:
            if job.kind == DatasetImport.Kind.ORTHOPHOTO:
                report = tile_orthophotos(
                    orthophotos=[folder / name for name in job.parameters["files"]],
                    names=job.parameters.get("names"),
                    annotations=read_sites_file(folder / SITES),
                    options=TilingOptions.checked(**job.parameters["options"]),
                    progress=reporter.update,
                    negatives=read_sites_file(folder / NEGATIVES) if job.parameters.get("negatives") else None,
                    source=job.parameters.get("source"),
                    **target,
                )
            else:
                contents = check_zip(folder / ARCHIVE, ZipLimits.from_settings(), coco_file=job.coco_file or None)
                report = import_coco_zip(
                    archive_path=folder / ARCHIVE, contents=contents, progress=reporter.update, **target
                )
    except ApplicationError as exc:
        message = exc.message
    except PermissionDenied as exc:  # the uploader lost the right while the import waited
        message = str(exc) or "The uploader may no longer do this."
    except DATABASE_ERRORS as exc:  # its transaction died with the connection: nothing of it was saved
        logger.exception("dataset import %s lost the database", import_id)
        message = (
            f"The worker lost the database during the import ({first_line(exc)}); nothing of it was saved. Upload "
            "the archive again."
        )
    except Exception:  # noqa: BLE001 - an import never stays 'running'
        reference = secrets.token_hex(4)
        logger.exception("dataset import %s crashed (reference %s)", import_id, reference)
        message = f"Internal error in the worker (reference {reference}); the server log has the details."
    else:
        # Committed: its end is written once the database is back should it have gone away just now.
        succeeded = dict(
            status=Status.SUCCEEDED,
            dataset=report.dataset,
            items_done=reporter.total,
            items_total=reporter.total,
            images_imported=report.images,
            annotations_imported=report.annotations,
            classes_added=report.classes_added,
            rejected=[{"item": item, "reason": reason} for item, reason in report.rejected[:MAX_REPORTED]],
            rejected_count=len(report.rejected),
            georeferenced=[{"item": item, "found": what} for item, what in report.georeferenced[:MAX_REPORTED]],
            georeferenced_count=len(report.georeferenced),
            stats=report.stats,
            finished_at=timezone.now(),
        )
        when_database_is_back(
            lambda: DatasetImport.objects.filter(pk=import_id, status=Status.RUNNING).update(**succeeded),
            within=settings.DUMPSITE_IMPORT_STALE_SECONDS,
            what=f"import {import_id}'s end",
        )
        return Status.SUCCEEDED
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    when_database_is_back(
        lambda: DatasetImport.objects.filter(pk=import_id, status=Status.RUNNING).update(
            status=Status.FAILED, error_message=message[:4000], finished_at=timezone.now()
        ),
        within=settings.DUMPSITE_IMPORT_STALE_SECONDS,
        what=f"import {import_id}'s failure",
    )
    return Status.FAILED


def dataset_imports_fail_stale(now=None) -> int:
    """Fail running imports whose worker stopped reporting (killed, machine gone): their transaction died with
    the worker, so nothing of them was saved. Returns how many were failed."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.DUMPSITE_IMPORT_STALE_SECONDS)
    failed = 0
    for job in DatasetImport.objects.filter(status=Status.RUNNING, heartbeat_at__lt=limit).only("pk", "key"):
        failed += DatasetImport.objects.filter(pk=job.pk, status=Status.RUNNING, heartbeat_at__lt=limit).update(
            status=Status.FAILED,
            error_message=(
                f"The worker stopped reporting for over {settings.DUMPSITE_IMPORT_STALE_SECONDS} s (it died or was "
                "killed); nothing of this import was saved. Upload the archive again."
            ),
            finished_at=now,
        )
        shutil.rmtree(imports_root() / job.key, ignore_errors=True)
    return failed


def may_import(user) -> bool:
    """Whether ``user`` may upload at all: create datasets, or change at least one."""
    return can(user, "datasets.add_dataset") or visible(user, "datasets.change_dataset", Dataset.objects.all()).exists()
