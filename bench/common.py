"""Measuring side by side on a noisy shared machine: alternate the variants, repeat, report medians and ratios."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from workers.cluster import start_cluster, stop_cluster


@dataclass
class Figure:
    benchmark: str
    name: str
    value: str
    target: str
    met: bool | None  # None: informative, no target

    def verdict(self) -> str:
        return "—" if self.met is None else ("met" if self.met else "MISSED")


def alternate(variants: dict[str, Callable[[], object]], repetitions: int) -> dict[str, list[float]]:
    """Run the variants in turn (a, b, a, b, ...) and return each one's wall times in seconds."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repetitions):
        for name, func in variants.items():
            start = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - start)
    return times


def finished_run(run_id: int, start: float, *, interval: float, what: str):
    """Wait for the run to end (polled every ``interval`` s, lazily, so as not to take CPU from it); its wall time
    from ``start`` (``time.time()``) to its ``finished_at``, and the run. A run that did not succeed ends the
    benchmark."""
    from training.models import TrainingRun

    while TrainingRun.objects.filter(pk=run_id, status__in=("queued", "running")).exists():
        time.sleep(interval)
    run = TrainingRun.objects.get(pk=run_id)
    if run.status != "succeeded":
        raise RuntimeError(f"bench {what} {run_id} ended {run.status}: {run.error_message}")
    assert run.finished_at is not None
    return run.finished_at.timestamp() - start, run


def built_detection_run(name: str, detections: int):
    """The detection run a bench built before under ``name``, when it is whole (``detections`` of them); one left
    half-built by an interrupted bench is removed, and None says: build it."""
    from training.models import TrainingRun

    found = TrainingRun.objects.filter(name=name, kind="detect").first()
    if found is not None and found.detections.count() == detections:
        return found
    if found is not None:
        found.detections.all().delete()
        found.delete()
    return None


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}, {platform.platform()}"


ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "var" / "bench"


class Cluster:
    """A real worker cluster (`manage.py worker`) on the bench database, with the product's settings."""

    def __init__(self, log_name: str = "qcluster.log", **env: str):
        SCRATCH.mkdir(parents=True, exist_ok=True)
        self.log = SCRATCH / log_name
        self.env = env  # on top of this process's environment
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Cluster:
        self.proc = start_cluster(self.log, env=dict(os.environ, **self.env))
        self.wait_idle()
        return self

    def wait_idle(self, settle: float = 3.0) -> None:
        """Give the cluster time to start (or finish a task) and fall back to polling an empty queue."""
        time.sleep(settle)
        assert self.proc is not None, "start the worker first"
        if self.proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {self.proc.returncode}; see {self.log}")

    def __exit__(self, *exc) -> None:
        if self.proc:
            stop_cluster(self.proc)


def process_start_boottime(pid: int) -> float:
    """When a process started, in seconds of CLOCK_BOOTTIME (10 ms resolution). Read from /proc/<pid>/stat:
    psutil's create_time adds the boot time, which Linux gives in whole seconds, so it can be off by up to a
    second, and queue latency is measured in tenths."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    starttime = int(stat[stat.rindex(")") + 2 :].split()[19])  # clock ticks after boot
    return starttime / os.sysconf("SC_CLK_TCK")


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def peak_rss_mib(pid: int) -> float:
    """The process's high-water mark of resident memory. psutil has no such figure on Linux: the kernel's own
    VmHWM line is read here."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def run_tool(argv: list[str], work: Path, name: str) -> float:
    """Run one of MMDetection's tools in a fresh ``work`` folder, its output in ``stdout.log``; the wall seconds."""
    import shutil
    import sys

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    with open(work / "stdout.log", "wb") as log:
        proc = subprocess.run(
            [sys.executable, *argv], cwd=work, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{name} exited with {proc.returncode}; see {work / 'stdout.log'}")
    return wall
