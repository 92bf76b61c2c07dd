"""django-q2 entry points. Thin: they take ids and call one service."""

from core.interface import audit_interface
from training.execution.common import tracking_ended
from training.models import TrainingRun

from .queue import training_run_take
from .reaper import training_runs_reap_stale


def execute_training_run(run_id: int) -> str:
    """Sent when run ``run_id`` is queued: this worker takes the run it takes next (the queue decides which)."""
    with audit_interface("worker"):
        return training_run_take(run_id=run_id)


def take_training_run() -> str:
    """Sent when resources freed up or a worker sits idle while a run waits."""
    with audit_interface("worker"):
        return training_run_take()


def reap_stale_runs() -> list[int]:
    with audit_interface("worker"):
        return training_runs_reap_stale()


def end_tracking(run_id: int, status: str) -> None:
    """Sent by the reaper: end the MLflow run of a training whose worker died (``status``: how it ended)."""
    with audit_interface("worker"):
        run = TrainingRun.objects.filter(pk=run_id).first()
        if run is not None:
            tracking_ended(run, status)
