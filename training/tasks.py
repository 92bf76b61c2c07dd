"""django-q2 entry points. Thin: they take ids and call one service."""

from audit.services import audit_interface

from .reaper import training_runs_reap_stale
from .worker import training_run_execute


def execute_training_run(run_id: int) -> str:
    with audit_interface("worker"):
        return training_run_execute(run_id=run_id)


def reap_stale_runs() -> list[int]:
    with audit_interface("worker"):
        return training_runs_reap_stale()
