"""Start and stop a worker cluster (``manage.py worker``: django-q2's cluster and its agent) as a child process,
and wait for what it does: for the test suite's real workers and the benchmarks. Not imported by the web process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_cluster(log: Path, env: dict | None = None) -> subprocess.Popen:
    """A cluster in its own process group, its output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_cluster(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the cluster's main process, which stops its processes within seconds (tests/e2e/
    test_worker_stop.py); then whatever is left of the group is killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def wait_for(predicate, timeout: float, interval: float = 0.5, message: str = "condition"):
    """Call ``predicate`` every ``interval`` seconds until it returns something true, and return that; after
    ``timeout`` seconds, TimeoutError naming ``message``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {message}")
