"""django-q2 entry points of datasets. Thin: they take ids and call one service."""

from django.conf import settings

from core.file_cache import prune
from core.interface import audit_interface

from .imports import dataset_import_execute
from .views import thumbnail_root


def execute_import(import_id: int) -> str:
    with audit_interface("worker"):
        return dataset_import_execute(import_id=import_id)


def clean_up() -> dict:
    """Scheduled (hourly): the thumbnails' cache kept under its budget."""

    return {"thumbnails": prune(thumbnail_root(), settings.DUMPSITE_PICTURE_CACHE_MAX_BYTES)}
