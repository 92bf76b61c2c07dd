"""What a run asks for and what a worker has: GPUs and CPU slots. The placement rules, in one place.

A run asks for ``processes`` of a ``device`` (its parameters): a GPU run takes one GPU per process, a CPU run one
CPU slot per process. A worker cluster declares its GPU ids and CPU slots (``DUMPSITE_WORKER_GPUS``,
``DUMPSITE_WORKER_CPU_SLOTS``); what its running runs hold is taken, the rest is free.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from core.errors import ApplicationError

from .models import Worker


@dataclass(frozen=True)
class Need:
    device: str  # "cpu" or "gpu"
    count: int

    def describe(self) -> str:
        if self.device == "gpu":
            return f"{self.count} GPU{'s' if self.count != 1 else ''}"
        return f"{self.count} CPU slot{'s' if self.count != 1 else ''}"


def need_of(params: dict) -> Need:
    return Need(device=params.get("device") or "cpu", count=int(params.get("processes") or 1))


@dataclass(frozen=True)
class Capacity:
    gpus: tuple[str, ...]
    cpu_slots: int

    def can_ever(self, need: Need) -> bool:
        """Whether ``need`` fits this capacity when nothing else runs."""
        return need.count <= (len(self.gpus) if need.device == "gpu" else self.cpu_slots)

    def take(self, need: Need) -> list[str] | None:
        """The GPUs ``need`` gets out of this (free) capacity: the lowest free ids ([] for a CPU run); None when it
        does not fit now."""
        if not self.can_ever(need):
            return None
        return list(self.gpus[: need.count]) if need.device == "gpu" else []

    def describe(self) -> str:
        gpus = f"GPUs {','.join(self.gpus)}" if self.gpus else "no GPU"
        return f"{gpus}, {self.cpu_slots} CPU slot{'s' if self.cpu_slots != 1 else ''}"


def declared_capacity() -> Capacity:
    """What this host's settings declare for a worker started here."""
    return Capacity(gpus=tuple(settings.TRAINING_WORKER_GPUS), cpu_slots=max(0, settings.TRAINING_WORKER_CPU_SLOTS))


def capacity_of(worker) -> Capacity:
    return Capacity(gpus=tuple(worker.gpus), cpu_slots=worker.cpu_slots)


def site_defaults() -> dict:
    """Parameters whose default is the site's: runs train on a GPU where the site's workers have them."""
    return {"device": "gpu" if settings.TRAINING_GPU_WORKERS else "cpu"}


def assert_some_worker_can_take(params: dict) -> None:
    """Refuse a run that no worker of this site could ever take: none seen lately (DUMPSITE_WORKER_FORGET), nor
    what this host's settings declare, has that many GPUs or CPU slots."""
    need = need_of(params)
    known = [(settings.DUMPSITE_HOST_ID + " (this host's settings)", declared_capacity())]
    since = timezone.now() - timedelta(seconds=settings.TRAINING_WORKER_FORGET)
    workers = list(Worker.objects.filter(heartbeat_at__gte=since))
    known += [(w.name, capacity_of(w)) for w in workers]
    nodes = int(params.get("nodes") or 1)
    if nodes > 1:
        assert_enough_hosts(need, nodes, workers)
    if any(capacity.can_ever(need) for _, capacity in known):
        return
    unit = (lambda c: len(c.gpus)) if need.device == "gpu" else (lambda c: c.cpu_slots)
    name, largest = max(known, key=lambda item: unit(item[1]))
    what = "processes" if need.count > 1 else "device"
    raise ApplicationError(
        f"No worker of this site could ever take this run: it needs {need.describe()} (processes "
        f"{need.count}, device {need.device}), and the largest worker, {name}, has {largest.describe()}.",
        {what: f"needs {need.describe()}; the largest worker has {largest.describe()}"},
    )


def assert_enough_hosts(need: Need, nodes: int, workers: list[Worker]) -> None:
    """A run across ``nodes`` hosts needs that many hosts, each reachable by the others (an address) with a worker
    that could take one host's part: refused at once when the site has fewer."""
    able = {w.host for w in workers if w.address and capacity_of(w).can_ever(need)}
    if settings.DUMPSITE_HOST_ADDRESS and declared_capacity().can_ever(need):
        able.add(settings.DUMPSITE_HOST_ID)
    if len(able) < nodes:
        raise ApplicationError(
            f"No {nodes} hosts of this site could take this run together: it needs {nodes} hosts with "
            f"{need.describe()} each and an address the others reach (DUMPSITE_HOST_ADDRESS), and the site has "
            f"{len(able)}.",
            {"nodes": f"at most {len(able)} host{'s' if len(able) != 1 else ''} of this site could take a part"},
        )
