"""Runs across several hosts (``nodes`` > 1): a host's reservation of its part, the claim once every host has
reserved, and each part's heartbeat, port and end.

A worker that would take such a run reserves one part for its host, for ``DUMPSITE_GANG_TIMEOUT`` seconds. Each
reservation is one transaction on the run's locked row, so of several hosts reserving at once exactly one sees the
gang complete and claims the run for all of them: node ranks in the order of the hosts' addresses (the order in which
torch's c10d rendezvous ranks them: node 0 holds global rank 0), and the run recorded as node 0's. A reservation that
runs out before the others came is given up, and that host pauses as long before it reserves the run again, so a run
that cannot gather never holds a host.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from core.redact import redact_paths
from engine.processes import this_process
from workers.models import Worker

from ..models import RunNode, TrainingRun

Status = TrainingRun.Status
State = RunNode.State


def nodes_of(run: TrainingRun) -> int:
    return int(run.parameters.get("nodes") or 1) if run.kind == TrainingRun.Kind.TRAIN else 1


def run_node_reserve(*, run_id: int, worker: Worker, gpus: list[str]) -> RunNode | None:
    """Reserve a part of queued run ``run_id`` for ``worker``'s host; the claim of the whole run when this
    reservation completes the gang. None when this host may not reserve now: the run is no longer queued, the host
    (or another host with its address) holds a part already, or the host gave up on this run lately."""
    now = timezone.now()
    pid, started = this_process()
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id, status=Status.QUEUED).first()
        if run is None or not worker.address:
            return None
        parts = RunNode.objects.filter(run=run)
        parts.filter(state=State.RESERVED, reserved_until__lte=now).delete()  # ran out: that host is free again
        parts.filter(state=State.GAVE_UP, reserved_until__lte=now).delete()  # its pause is over
        # A reservation whose process stopped holding it (its worker died while it waited) counts no more.
        parts.filter(state=State.RESERVED, heartbeat_at__lt=now - _silence()).delete()
        if parts.filter(host=worker.host).exists() or parts.filter(address=worker.address).exists():
            return None
        node = RunNode.objects.create(
            run=run,
            worker=worker,
            host=worker.host,
            address=worker.address,
            pid=pid,
            process_started=started or 0.0,
            gpus=list(gpus),
            reserved_until=now + timedelta(seconds=settings.DUMPSITE_GANG_TIMEOUT),
            heartbeat_at=now,
        )
        reserved = list(parts.filter(state=State.RESERVED).order_by("address", "host"))
        if len(reserved) >= nodes_of(run):
            _claim(run, reserved[: nodes_of(run)], now)
        node.refresh_from_db()
        return node


def _claim(run: TrainingRun, parts: list[RunNode], now: datetime) -> None:
    """queued -> running for the whole gang: node ranks by address, the run recorded as node 0's."""
    for rank, part in enumerate(parts):
        RunNode.objects.filter(pk=part.pk).update(node_rank=rank, state=State.RUNNING, heartbeat_at=now)
    first = parts[0]
    TrainingRun.objects.filter(pk=run.pk, status=Status.QUEUED).update(
        status=Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker_host=first.host,
        worker_process=f"{first.host}:{first.pid}"[:300],
        worker_pid=first.pid,
        worker_started=first.process_started,
        worker_id=first.worker_id,
        assigned_gpus=list(first.gpus),
    )
    audit_record(action="started", obj=run, hosts=", ".join(f"{p.host} ({p.address})" for p in parts))


def run_node_give_up(*, node_id: int) -> bool:
    """A reservation that ran out before the gang was complete: given up, and the host pauses as long before it
    reserves this run again. False when the gang completed meanwhile (the part is running)."""
    pause = timezone.now() + timedelta(seconds=settings.DUMPSITE_GANG_TIMEOUT)
    return (
        RunNode.objects.filter(pk=node_id, state=State.RESERVED).update(state=State.GAVE_UP, reserved_until=pause) == 1
    )


def _silence() -> timedelta:
    return timedelta(seconds=settings.DUMPSITE_NODE_SILENCE)


def run_node_hold(*, node_id: int) -> None:
    """A reservation's process is still waiting for the other hosts (every second): one that stops holding it for
    ``DUMPSITE_NODE_SILENCE`` seconds is not counted in a gang."""
    RunNode.objects.filter(pk=node_id, state=State.RESERVED).update(heartbeat_at=timezone.now())


def run_node_release(*, node_id: int) -> None:
    """A reservation of a run that was cancelled (or claimed otherwise) before the gang was complete."""
    RunNode.objects.filter(pk=node_id, state=State.RESERVED).delete()


def run_node_beat(*, node_id: int) -> None:
    RunNode.objects.filter(pk=node_id, state=State.RUNNING).update(heartbeat_at=timezone.now())


def run_node_set_port(*, node_id: int, port: int) -> None:
    """Node 0's rendezvous port, once it is about to listen on it: the other hosts wait for it."""
    RunNode.objects.filter(pk=node_id).update(port=port)


def run_node_end(*, node_id: int, failed: str = "") -> None:
    """A part that ended: done, or failed with its message (what its processes reported)."""
    RunNode.objects.filter(pk=node_id, state=State.RUNNING).update(
        state=State.FAILED if failed else State.DONE, message=redact_paths(failed)[:2000], heartbeat_at=timezone.now()
    )
