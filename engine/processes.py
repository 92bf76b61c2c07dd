"""Process identity on this host (no Django: the training child uses it too): a pid with its start time, so that a
pid the kernel reused for another process is never taken for the one that was recorded."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

# Where the engine's child processes start (``python -m engine.child``): the folder that holds the package.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# psutil reports start times from the kernel's clock ticks: the same process reads the same value, within this.
START_TOLERANCE = 0.05


def started_at(pid: int | None) -> float | None:
    """Start time of a live process (None: no such process, a zombie, or no pid)."""
    if not pid:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.Error:
        return None


def this_process() -> tuple[int, float | None]:
    pid = os.getpid()
    return pid, started_at(pid)


def is_alive(pid: int | None, started: float | None) -> bool:
    """Whether the process recorded as (``pid``, ``started``) still lives. Without a recorded start time (a run
    claimed before start times were recorded), only the pid can be checked."""
    now = started_at(pid)
    if now is None:
        return False
    return started is None or abs(now - started) <= START_TOLERANCE
