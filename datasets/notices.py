"""What an import's end tells subscribers (``import.finished``, with its status and counts), written into the
outbox in the transaction that ended it."""

from __future__ import annotations

from django.db import transaction

from notifications.models import Event
from notifications.services import Notice, notice_emit

from .models import DatasetImport
from .selectors import imports_visible_to


def import_visible(import_id: int):
    return lambda user: imports_visible_to(user, DatasetImport.objects.filter(pk=import_id)).exists()


def import_end(import_id: int, *, where: dict | None = None, **fields) -> int:
    """running (and ``where``) -> ``fields`` (succeeded or failed), and the notice of it, in one transaction; 0 when
    the import was no longer running (nothing is told then)."""
    with transaction.atomic():
        running = DatasetImport.objects.filter(pk=import_id, status=DatasetImport.Status.RUNNING, **(where or {}))
        ended = running.update(**fields)
        if ended:
            job = DatasetImport.objects.get(pk=import_id)
            objects = {"import": ("datasetimport", job.pk)}
            if job.dataset_id:
                objects["dataset"] = ("dataset", job.dataset_id)
            data = {
                "status": job.status,
                "kind": job.kind,
                "images_imported": job.images_imported,
                "annotations_imported": job.annotations_imported,
                "rejected": job.rejected_count,
                **({"error": job.error_message[:2000]} if job.error_message else {}),
            }
            notice_emit(
                Notice(
                    event=Event.IMPORT_FINISHED,
                    title=f"Dataset import #{job.pk} {job.status}",
                    objects=objects,
                    audience=import_visible(job.pk),
                    data=data,
                )
            )
        return ended
