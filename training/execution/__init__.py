"""What a worker does with a run it claimed: its life to the end, by kind (``train`` trains and registers a model,
``evaluate`` evaluates one, and the kinds other rooms register in ``training.kinds``); the scheduler
(``scheduler.tasks``) calls ``training_run_execute``."""

from __future__ import annotations

from ..kinds import KINDS
from ..models import TrainingRun
from ..services import nodes_of, training_run_claim
from . import evaluate, train
from .common import logger

Status = TrainingRun.Status


def training_run_execute(*, run_id: int) -> str:
    """The whole life of a run this worker claimed, or of a queued one claimed here, out of the queue's order (a
    direct call). Returns the final status."""
    queued = TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED).first()
    if queued is not None and nodes_of(queued) > 1:
        logger.info("training run %s runs across hosts: only the workers of its hosts take it together", run_id)
    elif queued is not None and not training_run_claim(run_id=run_id):
        logger.info("training run %s not claimed", run_id)
    run = TrainingRun.objects.select_related("dataset", "base_model", "retry_of", "evaluated_model").get(pk=run_id)
    if run.status != Status.RUNNING:
        logger.info("training run %s is %s; not executed", run_id, run.status)
        return run.status
    if run.kind == TrainingRun.Kind.EVALUATE:
        return evaluate.execute(run)
    if run.kind in KINDS:
        return KINDS[run.kind].execute(run)
    return train.execute(run)
