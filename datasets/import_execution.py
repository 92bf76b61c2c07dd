"""An import's worker side: the upload's stored files read in place or fetched into this worker's scratch, the
import run with its progress written from a thread of its own, its end written once the database is back, and the
upload removed from the storage however it ends (``datasets.imports`` checks and keeps uploads)."""

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
from django.db import connections
from django.utils import timezone

from core.db import DATABASE_ERRORS, drop_broken_connections, first_line, when_database_is_back
from core.errors import ApplicationError
from core.storage import local_path, storage_errors

from .coco_import import import_coco_zip
from .imports import ARCHIVE, NEGATIVES, SITES, discard_upload, imports_root, stored_upload
from .models import DatasetImport
from .notices import import_end
from .sites import read_sites_file
from .tiling import TilingOptions, tile_orthophotos
from .zips import ZipLimits, check_zip

logger = logging.getLogger(__name__)
Status = DatasetImport.Status
MAX_REPORTED = 10_000  # rejected items kept in the report (the count is always whole)


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
    scratch = imports_root() / job.key
    target: dict[str, Any] = {
        "dataset_name": None if job.dataset_id else job.new_dataset_name,
        "dataset": job.dataset,
        "add_classes": job.add_classes,
        "created_by": job.created_by,
    }
    succeeded: dict[str, Any] | None = None
    try:
        if job.created_by_id is None:
            raise ApplicationError(
                "The account that uploaded this was deleted before the import ran; nothing was imported."
            )
        with ProgressReporter(import_id, settings.TRAINING_PROGRESS_INTERVAL) as reporter:
            report = _run_import(job, _fetch_upload(job, scratch), reporter, target)
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
    finally:
        # Before the end is written: whoever sees the import ended finds its upload gone.
        shutil.rmtree(scratch, ignore_errors=True)
        discard_upload(job.key)
    if succeeded is not None:
        end = succeeded
        # Committed: its end is written once the database is back should it have gone away just now.
        when_database_is_back(
            lambda: import_end(import_id, **end),
            within=settings.DUMPSITE_IMPORT_STALE_SECONDS,
            what=f"import {import_id}'s end",
        )
        return Status.SUCCEEDED
    when_database_is_back(
        lambda: import_end(import_id, status=Status.FAILED, error_message=message[:4000], finished_at=timezone.now()),
        within=settings.DUMPSITE_IMPORT_STALE_SECONDS,
        what=f"import {import_id}'s failure",
    )
    return Status.FAILED


def _fetch_upload(job: DatasetImport, scratch: Path) -> dict[str, Path]:
    """The import's stored files by their name in the upload: in place in the local folder, else fetched from the
    bucket into this worker's ``scratch``."""
    if job.kind == DatasetImport.Kind.ORTHOPHOTO:
        files = [*job.parameters["files"], SITES] + ([NEGATIVES] if job.parameters.get("negatives") else [])
    else:
        files = [ARCHIVE]
    try:
        return {file: local_path(stored_upload(job.key, file), scratch) for file in files}
    except FileNotFoundError:
        logger.error("import %s: %s is not in the storage", job.pk, stored_upload(job.key))
        raise ApplicationError("The upload is no longer stored (the storage lost it); upload again.") from None
    except storage_errors() as exc:
        logger.exception("import %s: the storage did not give the upload", job.pk)
        raise ApplicationError(
            f"The storage did not give the upload ({type(exc).__name__}); nothing was imported. Upload again once it "
            "answers."
        ) from None


def _run_import(job: DatasetImport, local: dict[str, Path], reporter: ProgressReporter, target: dict) -> Any:
    if job.kind == DatasetImport.Kind.ORTHOPHOTO:
        return tile_orthophotos(
            orthophotos=[local[name] for name in job.parameters["files"]],
            names=job.parameters.get("names"),
            annotations=read_sites_file(local[SITES]),
            options=TilingOptions.checked(**job.parameters["options"]),
            progress=reporter.update,
            negatives=read_sites_file(local[NEGATIVES]) if job.parameters.get("negatives") else None,
            source=job.parameters.get("source"),
            **target,
        )
    contents = check_zip(local[ARCHIVE], ZipLimits.from_settings(), coco_file=job.coco_file or None)
    return import_coco_zip(archive_path=local[ARCHIVE], contents=contents, progress=reporter.update, **target)


def dataset_imports_fail_stale(now=None) -> int:
    """Fail running imports whose worker stopped reporting (killed, machine gone): their transaction died with
    the worker, so nothing of them was saved. Returns how many were failed."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.DUMPSITE_IMPORT_STALE_SECONDS)
    failed = 0
    for job in DatasetImport.objects.filter(status=Status.RUNNING, heartbeat_at__lt=limit).only("pk", "key"):
        failed += import_end(
            job.pk,
            where={"heartbeat_at__lt": limit},  # unless it reported meanwhile
            status=Status.FAILED,
            error_message=(
                f"The worker stopped reporting for over {settings.DUMPSITE_IMPORT_STALE_SECONDS} s (it died or was "
                "killed); nothing of this import was saved. Upload the archive again."
            ),
            finished_at=now,
        )
        discard_upload(job.key)
    return failed
