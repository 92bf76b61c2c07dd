"""The queue: a worker cluster takes the next run that fits what it has free.

Queue order: priority (high first), then first come first served. A worker takes the first queued run it could
ever take; when that one does not fit what it has free now (a 2-GPU run while one of its GPUs is busy), it takes
nothing and the run waits for the resources, rather than being overtaken by smaller runs for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Set

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from training.execution import training_run_execute
from training.models import RunNode, TrainingRun
from training.services import nodes_of, run_node_reserve, training_run_claim
from workers.models import Worker
from workers.resources import Capacity, capacity_of, need_of
from workers.services import current_worker

from .gang import gang_part

logger = logging.getLogger(__name__)
Status = TrainingRun.Status
TAKE_TASK = "scheduler.tasks.take_training_run"


def free_capacity(worker) -> Capacity:
    """What ``worker`` has that its running runs do not hold."""
    used_gpus: set[str] = set()
    used_slots = 0
    held = list(
        TrainingRun.objects.filter(worker=worker, status=TrainingRun.Status.RUNNING).values_list(
            "assigned_gpus", "parameters"
        )
    )
    held += [(part.gpus, part.run.parameters) for part in parts_held(worker)]
    for gpus, params in held:
        need = need_of(params)
        if need.device == "gpu":
            used_gpus.update(gpus)
        else:
            used_slots += need.count
    return Capacity(
        gpus=tuple(g for g in worker.gpus if g not in used_gpus), cpu_slots=max(0, worker.cpu_slots - used_slots)
    )


def parts_held(worker: Worker) -> list[RunNode]:
    """The parts of runs across hosts that ``worker`` holds and that its runs do not count already: reservations not
    run out yet, and the running parts of other nodes than node 0 (node 0's run is recorded as this worker's)."""
    now = timezone.now()
    return list(
        RunNode.objects.filter(worker=worker)
        .filter(
            Q(state=RunNode.State.RESERVED, reserved_until__gt=now, run__status=Status.QUEUED)
            | Q(state=RunNode.State.RUNNING, run__status=Status.RUNNING, node_rank__gt=0)
        )
        .select_related("run")
    )


def host_waits_on(worker: Worker) -> set[int]:
    """Queued runs across hosts this worker's host holds a part of, or gave up on lately: its next take passes them
    by (the part is waited on by another process, or the host pauses)."""
    parts = RunNode.objects.filter(host=worker.host, run__status=Status.QUEUED, reserved_until__gt=timezone.now())
    return set(parts.values_list("run_id", flat=True))


def queue_order():
    return TrainingRun.objects.filter(status=Status.QUEUED).order_by("-priority", "created_at", "id")


def next_run_for(worker: Worker, free=None) -> tuple[TrainingRun | None, list[str]]:
    """The run ``worker`` takes next and the GPUs it gets, or (None, []) when it takes nothing now: the first
    queued run it could ever take, if it fits what is free."""
    capacity = capacity_of(worker)
    free = free_capacity(worker) if free is None else free
    passed = host_waits_on(worker)
    for run in queue_order().only("id", "kind", "parameters", "priority", "created_at"):
        need = need_of(run.parameters)
        if not capacity.can_ever(need) or run.pk in passed:
            continue  # another worker's run, or one this host waits on already
        if nodes_of(run) > 1 and not worker.address:
            continue  # the other hosts could not reach this one
        gpus = free.take(need)
        return (run, gpus) if gpus is not None else (None, [])
    return None, []


def training_run_claim_next(*, worker: Worker) -> TrainingRun | RunNode | None:
    """Claim the run ``worker`` takes next, with its GPUs. The worker's row is locked meanwhile, so that two
    processes of one cluster never count the same free GPU twice; the claim itself is the conditional UPDATE
    of ``training_run_claim`` (of several clusters, one wins; the loser looks again). For a run across hosts, the
    part of it reserved for this host (``training.services.nodes``)."""
    for _ in range(10):
        with transaction.atomic():
            worker = Worker.objects.select_for_update().get(pk=worker.pk)
            run, gpus = next_run_for(worker)
            if run is None:
                return None
            if nodes_of(run) > 1:  # a part of it reserved; the gang is waited for outside this transaction
                return run_node_reserve(run_id=run.pk, worker=worker, gpus=gpus)
            if training_run_claim(run_id=run.pk, worker=worker, gpus=gpus):
                return TrainingRun.objects.get(pk=run.pk)
    return None


def idle_processes(worker: Worker) -> int:
    busy = TrainingRun.objects.filter(worker=worker, status=Status.RUNNING).count() + len(parts_held(worker))
    return max(0, worker.processes - busy)


def training_runs_offer(worker: Worker, *, waited: float, skip: Set[int] = frozenset()) -> int | None:
    """The agent's part: when ``worker`` has an idle process and the run it would take next has waited ``waited``
    seconds (its own task went to a cluster that could not take it), ask the queue for a take, unless that run is
    in ``skip`` (asked for lately). Returns the run's id when it asked."""
    if idle_processes(worker) == 0:
        return None
    run, _ = next_run_for(worker)
    if run is None or run.pk in skip or (timezone.now() - run.created_at).total_seconds() < waited:
        return None
    training_runs_wake()
    return run.pk


def training_runs_wake() -> None:
    """A task that makes whichever worker gets it take the next run that fits it (if any)."""
    # django-q2 sets up its cluster configuration on import: only where it is used
    from django_q.tasks import async_task

    async_task(TAKE_TASK, task_name="training-take", group="training")


def training_run_take(*, run_id: int | None = None) -> str:
    """What a django-q2 task does: take the run this worker cluster takes next (by priority and age, if it fits
    what the cluster has free: see ``scheduler.queue``) and live it to its end. ``run_id`` is the run whose
    creation sent the task: which run is taken is the queue's decision. Returns what happened, for the task's
    result."""
    worker = current_worker()
    run = training_run_claim_next(worker=worker)
    if isinstance(run, RunNode):
        try:
            return gang_part(run, training_runs_wake)
        finally:
            wake_if_runs_wait()
    if run is None:
        status = TrainingRun.objects.filter(pk=run_id).values_list("status", flat=True).first() if run_id else None
        logger.info("worker %s took no run now (run %s is %s)", worker.name, run_id, status)
        return f"nothing to take now (run {run_id}: {status})" if run_id else "nothing to take now"
    try:
        status = training_run_execute(run_id=run.pk)
    finally:
        wake_if_runs_wait()
    return f"run {run.pk}: {status}"


def wake_if_runs_wait() -> None:
    """What a run (or a part of one) held is free again: a run waiting for it (or for a worker) gets a take."""
    if TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED).exists():
        training_runs_wake()
