"""Waiting for a run, as the end-to-end tests with real workers do."""

from __future__ import annotations

from tests.conftest import wait_for
from training.models import TrainingRun


def training(run_id: int, min_iter: int = 2) -> TrainingRun:
    """The run once its training process runs and has done ``min_iter`` iterations."""
    return wait_for(
        lambda: TrainingRun.objects.filter(
            pk=run_id, status="running", current_iter__gte=min_iter, training_pid__isnull=False
        ).first(),
        timeout=300,
        message=f"run {run_id} to be training",
    )


def finished(run_id: int, timeout: float = 600) -> TrainingRun:
    return wait_for(
        lambda: TrainingRun.objects.filter(pk=run_id, status__in=TrainingRun.FINISHED).first(),
        timeout=timeout,
        message=f"run {run_id} to finish",
    )
