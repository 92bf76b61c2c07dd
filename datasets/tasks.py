"""django-q2 entry points of datasets. Thin: they take ids and call one service."""

from django.conf import settings

from core.file_cache import prune_stored
from core.interface import audit_interface

from .import_execution import dataset_import_execute
from .views import THUMBNAILS


def execute_import(import_id: int) -> str:
    with audit_interface("worker"):
        return dataset_import_execute(import_id=import_id)


def clean_up() -> dict:
    """Scheduled (hourly): the thumbnails' cache kept under its budget."""

    return {"thumbnails": prune_stored(THUMBNAILS, settings.DUMPSITE_PICTURE_CACHE_MAX_BYTES)}
