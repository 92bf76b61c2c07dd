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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .events import EventTail, fold_progress
from .processes import PROJECT_ROOT

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
    "GLOO_SOCKET_IFNAME",
    "NCCL_SOCKET_IFNAME",
    "TORCH_HOME",
    "MPLCONFIGDIR",
    "XDG_CACHE_HOME",
    "PYTHONPATH",
)


def child_environment(extra_names: tuple[str, ...] = (), source: dict | None = None) -> dict:
    """An explicit, minimal environment for the training child: ``CHILD_ENV_NAMES`` plus ``extra_names`` (the
    site's own additions), taken from ``source`` (the worker's environment) where set."""
    values: Mapping[str, str] = os.environ if source is None else source
    env = {name: values[name] for name in (*CHILD_ENV_NAMES, *extra_names) if name in values}
    env.setdefault("PATH", os.defpath)
    return env


def resource_environment(
    env: dict, *, device: str, gpus: list[str] | tuple[str, ...] = (), processes: int = 1, cpu_count: int | None = None
) -> dict:
    """The child's environment for what its worker gave the run: its own GPUs (``CUDA_VISIBLE_DEVICES``), or none
    for a CPU run (a GPU of the host may belong to another run), and for several processes a share of the CPU
    threads each (unless the operator set them: mmengine and torchrun would otherwise pin every process to one)."""
    env = dict(env)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus) if device == "gpu" else ""
    if processes > 1:
        threads = str(max(1, (cpu_count or os.cpu_count() or 1) // processes))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(name, threads)
    return env


@dataclass(frozen=True)
class Rendezvous:
    """This host's place in a run across ``nodes`` hosts: torch's c10d rendezvous listens on node 0's ``endpoint``
    (its address and a port of the site's range) and ranks the hosts by their ``local_addr``; node 0 hosts it."""

    run_id: str
    nodes: int
    node_rank: int
    endpoint: tuple[str, int]
    local_addr: str
    join_timeout: int

    def argv(self) -> list[str]:
        host, port = self.endpoint
        host = f"[{host}]" if ":" in host else host  # an IPv6 address
        return [
            f"--nnodes={self.nodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={host}:{port}",
            f"--rdzv-id={self.run_id}",
            f"--rdzv-conf=is_host={'1' if self.node_rank == 0 else '0'},join_timeout={self.join_timeout}",
            f"--local-addr={self.local_addr}",
        ]


def child_argv(job_file: Path, module: str, processes: int = 1, rendezvous: Rendezvous | None = None) -> list[str]:
    """One process, or ``processes`` of them under torchrun: on one host a rendezvous of its own on a free port, or
    this host's part of a run across hosts (``rendezvous``)."""
    if processes <= 1 and rendezvous is None:
        return [sys.executable, "-m", module, str(job_file)]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *(rendezvous.argv() if rendezvous is not None else ["--standalone"]),
        f"--nproc-per-node={processes}",
        "--max-restarts=0",
        "-m",
        module,
        str(job_file),
    ]


@dataclass
class ChildResult:
    returncode: int | None
    state: dict = field(default_factory=dict)
    stopped: bool = False  # stopped because on_progress returned False
    timed_out: bool = False
    error: str | None = None
    log_tail: str = ""
    events: list[dict] = field(default_factory=list)  # every event the child wrote, as read while it ran


def tail_text(path: Path, max_bytes: int = 16_000, max_lines: int = 120) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return ""
    return last_lines(data, max_lines)


def last_lines(data: bytes, max_lines: int = 120) -> str:
    """The last ``max_lines`` lines of a log's end, as text."""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-max_lines:])


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


def runs_job(cmdline: list[str], job_file: Path) -> bool:
    """Whether a command line is a training process of ``job_file``: the child itself, a rank of it, or torchrun
    starting them (whose argv names both)."""
    return "engine.child" in cmdline and str(job_file) in cmdline


def processes_of_job(job_file: Path) -> list[int]:
    """Pids of every live process running ``job_file`` (torchrun and each of its ranks: each rank is in a session
    of its own, so a signal to torchrun's group does not reach them)."""

    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        info = proc.info
        if info["status"] != psutil.STATUS_ZOMBIE and runs_job(info["cmdline"] or [], job_file):
            found.append(info["pid"])
    return found


def kill_job_processes(job_file: Path) -> list[int]:
    """SIGKILL the process group of every process running ``job_file`` (data-loader workers are in their rank's
    group). Returns the pids found; matching the command line keeps an unrelated process that reuses a pid safe."""
    pids = processes_of_job(job_file)
    for pid in pids:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return pids


def kill_training_process(pid: int | None, job_file: Path) -> bool:
    """SIGKILL the training processes of ``job_file``: the group of ``pid`` (the child, or torchrun) if that process
    still runs the job, and every rank found by its command line. True when anything was signalled.

    The command line is checked first: after a crash the pid may already belong to an unrelated process.
    """

    killed = False
    if pid:
        try:
            ours = runs_job(psutil.Process(pid).cmdline(), job_file)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            ours = False
        if ours:
            try:
                os.killpg(pid, signal.SIGKILL)
                killed = True
            except ProcessLookupError:
                pass
    return bool(kill_job_processes(job_file)) or killed


class ExitWatch:
    """Sleep until a timeout or the child's exit, whichever comes first, without waking in between: a pidfd
    becomes readable when the process ends. (``Popen.wait(timeout)`` polls every 50 ms, and each wake-up takes a
    core from the training's threads on a small machine.)"""

    def __init__(self, pid: int):
        try:
            self.fd: int | None = os.pidfd_open(pid)
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
    module: str = "engine.child",
    processes: int = 1,
    rendezvous: Rendezvous | None = None,
) -> ChildResult:
    """Run the child with ``env`` (default: :func:`child_environment`), never the worker's whole environment; with
    ``processes`` > 1, that many ranks under torchrun, and with a ``rendezvous`` this host's ranks of a run across
    hosts. However it ends, no process of the job is left."""
    job_file = Path(job_file).absolute()  # the child runs in its folder (below): a relative name would not be found
    argv = child_argv(job_file, module, processes, rendezvous)
    child_env = dict(child_environment() if env is None else env)
    if rendezvous is not None:  # each rank checks that the rendezvous ranked this host as the platform did
        child_env["DUMPSITE_NODE_RANK"] = str(rendezvous.node_rank)
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), child_env.get("PYTHONPATH")]))
    child_env["PYTHONUNBUFFERED"] = "1"
    # The child (each rank) ends itself when this process dies: a training without its supervisor runs unwatched.
    child_env["DUMPSITE_SUPERVISOR_PID"] = str(os.getpid())
    tail = EventTail(events_file)
    state: dict = {}
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            argv,
            # In the job's own folder (the run's scratch): what a library writes beside itself lands there and goes
            # with it (mmengine's distributed validation collects its ranks' results in ./.dist_test), never in the
            # code's folder, which may be read-only.
            cwd=job_file.parent,
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

    def keep(events: list[dict]) -> list[dict]:
        result.events.extend(events)
        return events

    try:
        while True:
            returncode = proc.poll()
            fold_progress(state, keep(tail.read_new()))
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
        kill_job_processes(job_file)
        raise
    finally:
        exited.close()
    if result.stopped or result.timed_out or processes > 1 or rendezvous is not None:
        kill_job_processes(job_file)  # ranks live in sessions of their own: end any that outlived torchrun
    fold_progress(state, keep(tail.read_new()))
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
