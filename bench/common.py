"""Measuring side by side on a noisy shared machine: alternate the variants, repeat, report medians and ratios."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


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


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}, {platform.platform()}"
