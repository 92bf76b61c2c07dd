"""django-q2 entry points of the registry. Thin: they take ids and call one service."""

from audit.services import audit_interface

from .predictions import prediction_execute


def execute_prediction(prediction_id: int) -> str:
    with audit_interface("worker"):
        return prediction_execute(prediction_id=prediction_id)
