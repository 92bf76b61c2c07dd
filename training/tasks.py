"""django-q2 entry points. Thin: they take ids and call one service."""

from .services import training_run_execute, training_runs_reap_stale


def execute_training_run(run_id: int) -> str:
    return training_run_execute(run_id=run_id)


def reap_stale_runs() -> list[int]:
    return training_runs_reap_stale()
