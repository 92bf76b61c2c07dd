"""COCO zips uploaded through the API or the admin: stored on the shared work root, checked at once (a refused
archive never becomes an import), then imported by a worker with progress and the importer's item report.

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

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from access.rules import can, require, visible
from dumpsite.errors import ApplicationError

from .coco_import import import_coco_zip
from .models import Dataset, DatasetImport
from .services import validate_dataset_name
from .zips import ZipLimits, check_zip

logger = logging.getLogger(__name__)
Status = DatasetImport.Status
TASK = "datasets.tasks.execute_import"
ARCHIVE = "archive.zip"
MAX_REPORTED = 10_000  # rejected items kept in the report (the count is always whole)


def imports_root() -> Path:
    return Path(settings.TRAINING_WORK_ROOT) / "imports"


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
    if (dataset is None) == (not dataset_name):
        raise ApplicationError(
            "Name a new dataset or choose an existing one (not both).", {"dataset": "one of dataset, dataset_name"}
        )
    if dataset is None:
        require(user, "datasets.add_dataset", message="You may not create datasets.")
        validate_dataset_name(dataset_name)
    else:
        require(user, "datasets.change_dataset", dataset, message=f"You may not change dataset {dataset.name!r}.")
    if coco_file is not None and (not isinstance(coco_file, str) or len(coco_file) > 500):
        raise ApplicationError("coco_file names one file inside the archive.", {"coco_file": "invalid"})
    if upload is None:
        raise ApplicationError("Attach the zip archive.", {"archive": "missing"})
    key = secrets.token_hex(12)
    folder = imports_root() / key
    folder.mkdir(parents=True, mode=0o700)
    try:
        size = _store(upload, folder / ARCHIVE)
        if size > settings.DUMPSITE_ZIP_MAX_BYTES:
            raise ApplicationError(
                f"The archive is {size:,} bytes; at most {settings.DUMPSITE_ZIP_MAX_BYTES:,} are accepted.",
                {"archive": "too large"},
            )
        contents = check_zip(folder / ARCHIVE, ZipLimits.from_settings(), coco_file=coco_file or None)
        with transaction.atomic():
            job = DatasetImport.objects.create(
                key=key,
                dataset=dataset,
                new_dataset_name=dataset_name or "",
                add_classes=bool(add_classes),
                coco_file=contents.coco_file,
                layout=contents.layout,
                archive_name=os.path.basename(str(archive_name or "").replace("\\", "/"))[:255],
                archive_bytes=size,
                archive_members=len(contents.files),
                created_by=user,
            )
            transaction.on_commit(lambda: _enqueue(job.pk))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return job


def _enqueue(import_id: int) -> None:
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
    try:
        contents = check_zip(folder / ARCHIVE, ZipLimits.from_settings(), coco_file=job.coco_file or None)
        with ProgressReporter(import_id, settings.TRAINING_PROGRESS_INTERVAL) as reporter:
            report = import_coco_zip(
                archive_path=folder / ARCHIVE,
                contents=contents,
                dataset_name=None if job.dataset_id else job.new_dataset_name,
                dataset=job.dataset,
                add_classes=job.add_classes,
                created_by=job.created_by,
                progress=reporter.update,
            )
    except ApplicationError as exc:
        message = exc.message
    except Exception:  # noqa: BLE001 - an import never stays 'running'
        reference = secrets.token_hex(4)
        logger.exception("dataset import %s crashed (reference %s)", import_id, reference)
        message = f"Internal error in the worker (reference {reference}); the server log has the details."
    else:
        DatasetImport.objects.filter(pk=import_id, status=Status.RUNNING).update(
            status=Status.SUCCEEDED,
            dataset=report.dataset,
            items_done=reporter.total,
            items_total=reporter.total,
            images_imported=report.images,
            annotations_imported=report.annotations,
            classes_added=report.classes_added,
            rejected=[{"item": item, "reason": reason} for item, reason in report.rejected[:MAX_REPORTED]],
            rejected_count=len(report.rejected),
            finished_at=timezone.now(),
        )
        return Status.SUCCEEDED
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    DatasetImport.objects.filter(pk=import_id, status=Status.RUNNING).update(
        status=Status.FAILED, error_message=message[:4000], finished_at=timezone.now()
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


def imports_visible_to(user, queryset=None):
    """A user's own imports; every import for users who may change every dataset."""
    queryset = DatasetImport.objects.select_related("dataset", "created_by") if queryset is None else queryset
    if user is None:
        return queryset
    if not user.is_authenticated:
        return queryset.none()
    if can(user, "datasets.change_dataset"):
        return queryset
    return queryset.filter(created_by=user)
