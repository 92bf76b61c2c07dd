"""Start the training child, follow its events, report progress, and stop it on request or timeout.

No Django here: the caller passes callbacks. ``on_progress(state)`` is called at most once per ``interval``
seconds (and at least that often, as a heartbeat) and returns False when the run must stop (cancelled elsewhere).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .events import EventTail, fold_progress

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# What the training child inherits from the worker's environment: the process basics, locale, thread counts and
# accelerator selection. Nothing else: the worker holds the database password and Django's secret key, and the
# child (which runs MMDetection on user-supplied data and logs its environment) needs neither.
CHILD_ENV_NAMES = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "TORCH_HOME",
    "MPLCONFIGDIR",
    "XDG_CACHE_HOME",
    "PYTHONPATH",
)


def child_environment(extra_names: tuple[str, ...] = (), source: dict | None = None) -> dict:
    """An explicit, minimal environment for the training child: ``CHILD_ENV_NAMES`` plus ``extra_names`` (the
    site's own additions), taken from ``source`` (the worker's environment) where set."""
    source = os.environ if source is None else source
    env = {name: source[name] for name in (*CHILD_ENV_NAMES, *extra_names) if name in source}
    env.setdefault("PATH", os.defpath)
    return env


@dataclass
class ChildResult:
    returncode: int | None
    state: dict = field(default_factory=dict)
    stopped: bool = False  # stopped because on_progress returned False
    timed_out: bool = False
    error: str | None = None
    log_tail: str = ""


def tail_text(path: Path, max_bytes: int = 16_000, max_lines: int = 120) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-max_lines:])


def last_exception_line(log: str) -> str | None:
    """The 'SomeError: message' line that ends a Python traceback, if the log has one."""
    lines = log.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback (most recent call last)"):
            for line in reversed(lines[i:]):
                if line and not line.startswith((" ", "\t")):
                    return line.strip()
    return None


def terminate_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the child's whole process group, then SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            # The leader is gone; make sure nothing else of its group survives.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        except subprocess.TimeoutExpired:
            continue


def kill_training_process(pid: int, job_file: Path) -> bool:
    """SIGKILL the process group of training child ``pid`` if that process is running ``job_file``.

    The command line is checked first: after a crash the pid may already belong to an unrelated process.
    """
    import psutil

    try:
        cmdline = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    if "training.engine.child" not in cmdline or str(job_file) not in cmdline:
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


class ExitWatch:
    """Sleep until a timeout or the child's exit, whichever comes first, without waking in between: a pidfd
    becomes readable when the process ends. (``Popen.wait(timeout)`` polls every 50 ms, and each wake-up takes a
    core from the training's threads on a small machine.)"""

    def __init__(self, pid: int):
        try:
            self.fd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: plain sleeps
            self.fd = None

    def wait(self, timeout: float) -> None:
        if self.fd is None:
            time.sleep(timeout)
        else:
            select.select([self.fd], [], [], timeout)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def run_child(
    *,
    job_file: Path,
    events_file: Path,
    log_file: Path,
    on_progress: Callable[[dict], bool],
    on_start: Callable[[int], None] | None = None,
    interval: float = 1.0,
    timeout: float | None = None,
    poll: float = 1.0,
    env: dict | None = None,
    module: str = "training.engine.child",
) -> ChildResult:
    """Run the child with ``env`` (default: :func:`child_environment`), never the worker's whole environment."""
    argv = [sys.executable, "-m", module, str(job_file)]
    child_env = dict(child_environment() if env is None else env)
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), child_env.get("PYTHONPATH")]))
    child_env["PYTHONUNBUFFERED"] = "1"
    tail = EventTail(events_file)
    state: dict = {}
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env,
            start_new_session=True,
        )
    if on_start:
        on_start(proc.pid)
    exited = ExitWatch(proc.pid)
    started = time.monotonic()
    last_report = 0.0
    result = ChildResult(returncode=None)
    try:
        while True:
            returncode = proc.poll()
            fold_progress(state, tail.read_new())
            now = time.monotonic()
            if returncode is not None:
                break
            if timeout is not None and now - started > timeout:
                result.timed_out = True
                terminate_group(proc)
                break
            if now - last_report >= interval:
                last_report = now
                if not on_progress(dict(state)):
                    result.stopped = True
                    terminate_group(proc)
                    break
            exited.wait(min(poll, max(0.0, last_report + interval - time.monotonic())))
    except BaseException:
        terminate_group(proc)
        raise
    finally:
        exited.close()
    fold_progress(state, tail.read_new())
    result.returncode = proc.wait()
    result.state = state
    result.log_tail = tail_text(log_file)
    if result.returncode != 0 and not (result.stopped or result.timed_out):
        result.error = (
            state.get("error")
            or last_exception_line(result.log_tail)
            or f"training process exited with status {result.returncode}"
        )
    return result
