"""django-q2 entry points of datasets. Thin: they take ids and call one service."""

from audit.services import audit_interface

from .imports import dataset_import_execute


def execute_import(import_id: int) -> str:
    with audit_interface("worker"):
        return dataset_import_execute(import_id=import_id)
