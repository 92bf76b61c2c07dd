"""django-q2 entry points of detection (a detection run's own work is a run's: ``training.tasks``)."""

from django.conf import settings

from core.file_cache import prune_stored

from .crops import CROPS


def clean_up() -> dict:
    """Scheduled (hourly): the crops' cache kept under its budget."""

    return {"crops": prune_stored(CROPS, settings.DUMPSITE_PICTURE_CACHE_MAX_BYTES)}
