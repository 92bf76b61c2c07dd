"""A worker's part in a run across hosts, from its reservation to its end: it waits for the other hosts, or gives up
when its reservation runs out (the host is free again, and the run stays queued); once the gang is complete, node 0
lives the run itself (rank 0 trains, writes and registers), any other node its own processes only. From the claim on,
a part beats its own heartbeat from a thread, so the other hosts see within DUMPSITE_NODE_SILENCE seconds that its
worker died."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.utils import timezone

from training.execution import training_run_execute
from training.execution.follow import training_run_follow
from training.execution.nodes import NodeBeat
from training.models import RunNode, TrainingRun
from training.services import run_node_end, run_node_give_up, run_node_hold, run_node_release

logger = logging.getLogger(__name__)
WAKE_EVERY = 5.0  # seconds between two asks for a take while the other hosts are missing
HOLD_EVERY = 1.0  # seconds between two signs that this host still waits (DUMPSITE_NODE_SILENCE drops a silent one)


def gang_wait(node: RunNode, wake: Callable[[], None], *, poll: float = 0.5) -> RunNode | None:
    """The part once every host has reserved (its node rank set), or None when the run went (cancelled) or the
    reservation ran out first. While it waits it asks for a take, at once and then every WAKE_EVERY seconds: the
    run's one task reached one host only, and another host's cluster may be idle."""
    held = time.monotonic()
    asked = held - WAKE_EVERY  # at once: the run's one task reached this host only
    while True:
        current = RunNode.objects.select_related("run").filter(pk=node.pk).first()
        if current is None:
            return None  # ran out, and another host's reservation cleared it
        if current.state == RunNode.State.RUNNING:
            return current
        if current.run.status != TrainingRun.Status.QUEUED:
            run_node_release(node_id=current.pk)
            return None
        if timezone.now() >= current.reserved_until:
            if run_node_give_up(node_id=current.pk):
                return None
            continue  # the gang completed meanwhile
        if time.monotonic() - held >= HOLD_EVERY:
            held = time.monotonic()
            run_node_hold(node_id=current.pk)
        if time.monotonic() - asked >= WAKE_EVERY:
            asked = time.monotonic()
            wake()
        time.sleep(poll)


def gang_part(node: RunNode, wake: Callable[[], None]) -> str:
    """What the take of a part of a run across hosts does: wait for the gang, then live this host's part."""
    run_id = node.run_id
    claimed = gang_wait(node, wake)
    if claimed is None:
        logger.info("run %s: its hosts did not gather; host %s is free again", run_id, node.host)
        return f"run {run_id}: the other hosts did not come within the reservation; this host is free again"
    with NodeBeat(claimed.pk):
        if claimed.node_rank == 0:
            status = training_run_execute(run_id=run_id)
            run_node_end(node_id=claimed.pk, failed="the run failed" if status == TrainingRun.Status.FAILED else "")
        else:
            status = training_run_follow(node_id=claimed.pk)
    return f"run {run_id} (node {claimed.node_rank}): {status}"
