"""django-q2 entry points of the registry. Thin: they take ids and call one service."""

from django.conf import settings

from core.file_cache import prune_stored
from core.interface import audit_interface

from .evaluations import GALLERY
from .mlflow_versions import mlflow_model_sync
from .predictions import prediction_execute, predictions_expire


def execute_prediction(prediction_id: int) -> str:
    with audit_interface("worker"):
        return prediction_execute(prediction_id=prediction_id)


def clean_up() -> dict:
    """Scheduled (hourly): predict checks past their retention, and the gallery pictures' cache over its budget."""

    with audit_interface("worker"):
        expired = predictions_expire()
    gallery = prune_stored(GALLERY, settings.DUMPSITE_PICTURE_CACHE_MAX_BYTES)
    return {"predictions": expired, "gallery": gallery}


def sync_to_mlflow(model_id: int) -> dict:
    """After a publication or withdrawal: the model's version in the site's MLflow registry."""
    return mlflow_model_sync(model_id=model_id)
