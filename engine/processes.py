"""Process identity on this host (no Django: the training child uses it too): a pid with its start time, so that a
pid the kernel reused for another process is never taken for the one that was recorded."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

# Where the engine's child processes start (``python -m engine.child``): the folder that holds the package.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The same process reads the same start every time; two readings differ by at most this.
START_TOLERANCE = 0.05
PROC = Path("/proc")


def _boot_offset() -> float:
    """A number of this boot alone (from the kernel's boot id), so that a pid started as many ticks after another
    boot is another process; 0 where the kernel has no boot id."""
    try:
        return int((PROC / "sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:6], 16) * 1e5
    except (OSError, ValueError):
        return 0.0


BOOT_OFFSET = _boot_offset()


def _start_ticks(pid: int) -> float | None:
    """Seconds after boot at which ``pid`` started, by the kernel's clock ticks (``/proc/<pid>/stat`` field 22);
    None for no such process or a zombie. Wall-clock steps (NTP, a VM resumed or forked) never move it, unlike
    psutil's ``create_time``, which adds a boot time that the kernel re-derives from the wall clock: one step of a
    second made a live worker look gone to its training child, which then stopped itself."""
    try:
        data = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":
        return None
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def started_at(pid: int | None) -> float | None:
    """The start of a live process, as its identity (None: no such process, a zombie, or no pid): on Linux, its
    start in clock ticks after boot plus a number of the boot; elsewhere psutil's start time (Unix seconds)."""
    if not pid:
        return None
    if PROC.is_dir():
        ticks = _start_ticks(pid)
        return None if ticks is None else BOOT_OFFSET + ticks
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
