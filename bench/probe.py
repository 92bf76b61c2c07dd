"""Tasks the bench hands to the real django-q2 cluster: the baseline of queue latency (a task that does nothing
but note when it started)."""

from __future__ import annotations

import time
from pathlib import Path


def note_start(path: str) -> None:
    """Write when this task started running, in seconds of CLOCK_BOOTTIME."""
    Path(path).write_text(repr(time.clock_gettime(time.CLOCK_BOOTTIME)))
