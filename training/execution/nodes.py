"""A host's part of a run across several hosts (``nodes`` > 1), once the gang is claimed (``training.services.nodes``).

- Node 0 lives the run as any run (``train.execute``): it exports, trains rank 0, pushes the files and registers the
  model. It also picks its rendezvous port and records it, and at each progress tick asks whether another host was
  lost (no heartbeat for DUMPSITE_NODE_SILENCE seconds) or failed: the run then fails with that message.
- Any other node (``follow.training_run_follow``) exports the same split into its own scratch folder, checks that it
  is the split node 0 recorded, waits for node 0's port, and runs its ranks. It stops them at once when the run is no
  longer running (cancelled, failed, out of time), and fails the run itself when node 0 is lost.
- Every part beats its own heartbeat from a thread (``NodeBeat``) from the claim on, also while it exports.
A host's processes that lose their worker end themselves (``engine.child.exit_with_parent``); the others then stop
within DUMPSITE_NODE_SILENCE seconds, whatever their collective operations wait on.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from core.errors import ApplicationError
from engine.supervisor import Rendezvous

from ..models import RunNode, TrainingRun
from ..services import nodes_of, run_node_beat, run_node_set_port

logger = logging.getLogger("training.execution")
Status = TrainingRun.Status
State = RunNode.State


class NodeBeat:
    """A part's heartbeat, beaten from a thread of its worker process every second while the part lives."""

    def __init__(self, node_id: int, every: float = 1.0):
        self.node_id, self.every = node_id, every
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"node-beat-{node_id}", daemon=True)

    def _beat(self) -> None:
        try:
            while not self.stopping.wait(self.every):
                try:
                    run_node_beat(node_id=self.node_id)
                except Exception:  # noqa: BLE001 - a database away for a moment must not end the beat
                    close_old_connections()
        finally:
            connection.close()

    def __enter__(self) -> NodeBeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


def problem_of(run: TrainingRun, own_rank: int, *, only: int | None = None) -> str | None:
    """What ended another host's part of ``run`` (or part ``only``), if anything did: its failure, or its
    silence."""
    silent_since = timezone.now() - timedelta(seconds=settings.DUMPSITE_NODE_SILENCE)
    nodes = nodes_of(run)
    parts = RunNode.objects.filter(run_id=run.pk, node_rank__isnull=False).exclude(node_rank=own_rank)
    for part in parts if only is None else parts.filter(node_rank=only):
        where = f"host {part.host} (node {part.node_rank} of {nodes})"
        if part.state == State.FAILED:
            return f"The run's processes on {where} failed: {part.message}"
        if part.state == State.RUNNING and part.heartbeat_at is not None and part.heartbeat_at < silent_since:
            seconds = (timezone.now() - part.heartbeat_at).total_seconds()
            return (
                f"The worker of {where} stopped answering (no heartbeat for {seconds:.0f} s); the run's processes "
                "on every host were stopped."
            )
    return None


def node_part(run: TrainingRun, rank: int) -> RunNode:
    return RunNode.objects.get(run_id=run.pk, node_rank=rank)


def free_port(address: str) -> int:
    """A port of DUMPSITE_RENDEZVOUS_PORTS free on ``address`` now, starting at the run's own offset."""
    low, high = settings.DUMPSITE_RENDEZVOUS_PORTS
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for port in range(low, high + 1):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
            return port
    raise ApplicationError(
        f"No port of DUMPSITE_RENDEZVOUS_PORTS ({low}-{high}) is free on {address} for the run's rendezvous; widen "
        "the range or retry the run once other runs across hosts have ended."
    )


def rendezvous_of(run: TrainingRun, part: RunNode, port: int) -> Rendezvous:
    first = node_part(run, 0) if part.node_rank else part
    return Rendezvous(
        run_id=f"dumpsite-run-{run.pk}",
        nodes=nodes_of(run),
        node_rank=part.node_rank or 0,
        endpoint=(first.address, port),
        local_addr=part.address,
        join_timeout=int(run.effective_time_limit),
    )


def leader_rendezvous(run: TrainingRun) -> Rendezvous:
    """Node 0: a free port of the range on its address, recorded for the other hosts."""
    part = node_part(run, 0)
    port = free_port(part.address)
    run_node_set_port(node_id=part.pk, port=port)
    return rendezvous_of(run, part, port)


def waited_problem(run: TrainingRun, own_rank: int, *, only: int | None = None) -> str | None:
    """This host's processes failed: often because another host's did or died (collective operations then fail
    everywhere). Waits up to DUMPSITE_NODE_SILENCE seconds for another part's failure or silence, the better
    explanation; None when there is none."""
    deadline = time.monotonic() + settings.DUMPSITE_NODE_SILENCE + 2
    while True:
        problem = problem_of(run, own_rank, only=only)
        if problem or time.monotonic() >= deadline:
            return problem
        time.sleep(0.5)


class LeaderLost(ApplicationError):
    """Node 0's worker stopped answering: the host that sees it fails the run (node 0 cannot)."""


class SplitChanged(ApplicationError):
    """The dataset changed between node 0's export and this host's: the run cannot train on one split."""


def wait_for_node0(what: str, check, run: TrainingRun, rank: int, *, timeout: float):
    """Poll ``check`` until it answers; ApplicationError when the run is no longer running, or another host's part
    ended (LeaderLost for node 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if not TrainingRun.objects.filter(pk=run.pk, status=Status.RUNNING).exists():
            raise ApplicationError("The run ended before this host's part started.")
        lost = problem_of(run, rank, only=0)
        if lost:
            raise LeaderLost(lost)
        problem = problem_of(run, rank)
        if problem:
            raise ApplicationError(problem)
        time.sleep(0.5)
    raise ApplicationError(f"Node 0 did not record {what} within {timeout:.0f} s.")
