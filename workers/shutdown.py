"""A worker cluster that stops within seconds, whatever signal reached it and whichever of its processes it reached.

``manage.py worker`` is a main process (this code and the agent thread), django-q2's sentinel, and the sentinel's
children: the task processes (each maybe supervising a training child in a session of its own), the pusher and the
monitor. A stop comes three ways, and each left something behind before:

- SIGTERM or SIGINT to the main process only: the sentinel stops its processes in order, but a task process busy with
  a training does not stop until the training ends (hours).
- SIGTERM to the whole group (systemd's default stop, ``kill -- -PGID``): the sentinel and the task processes die at
  once (django-q2 leaves SIGTERM at its default there), and only the main process is left to tidy up.
- SIGINT to the whole group (Ctrl-C in a terminal): the sentinel and its processes ignore it, as under the first way.

What hung was the main process. After a group SIGTERM it asked the cluster to stop: django-q2's ``Cluster.stop``
sets a multiprocessing ``Event``, and ``Event.set`` waits until every process asleep on that event has woken. The
sentinel, killed by the same signal while asleep on it, never wakes: the main process waited for good (py-spy:
``Condition.notify`` under ``Event.set`` under ``Cluster.stop``; 5 of 12 group SIGTERMs). So ``Cluster.stop`` runs in
a thread with a deadline, what is left of the process tree after it is killed, and a watchdog thread ends the process
``hard_limit`` seconds after the signal whatever the main thread is doing. The signal handler itself only records
the signal and takes no lock (a handler that sets a ``threading.Event`` can deadlock on that event's lock when it
interrupts the main thread inside ``Event.wait``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import psutil

logger = logging.getLogger(__name__)


class StopSignal:
    """The first SIGTERM / SIGINT received, recorded by a handler that takes no lock."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.at: float | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.at = time.monotonic()
            self.signum = signum

    @property
    def received(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def wait(self, *, while_true: Callable[[], bool], poll: float = 0.25) -> None:
        """Sleep until a signal came or ``while_true()`` turns false (the sentinel died)."""
        while not self.received and while_true():
            time.sleep(poll)


def descendants() -> list[psutil.Process]:
    """Every live process below this one, the deepest first. A training child sits in a session of its own (a
    signal to this group does not reach it) but is still a descendant while its task process lives."""
    try:
        found = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    return list(reversed(found))


def end_processes(processes: list[psutil.Process], grace: float) -> list[int]:
    """SIGTERM each process, SIGKILL whatever still lives ``grace`` seconds later; reap our own children. Returns
    the pids that were still alive when asked."""
    alive = []
    for proc in processes:
        try:
            proc.terminate()
            alive.append(proc)
        except psutil.Error:
            continue
    _, left = psutil.wait_procs(alive, timeout=grace)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(left, timeout=2)
    return [p.pid for p in alive]


def call_with_deadline(target: Callable[[], object], seconds: float, name: str) -> bool:
    """Run ``target`` in a daemon thread and wait at most ``seconds``: True when it returned in time. (django-q2's
    ``Cluster.stop`` waits for a sentinel that a group signal killed to wake, for good, and on task processes that
    finish their task first.)"""
    done = threading.Event()

    def call() -> None:
        try:
            target()
        except Exception:  # noqa: BLE001 - a failed graceful step is followed by the forceful one anyway
            logger.exception("worker stop: %s failed", name)
        finally:
            done.set()

    threading.Thread(target=call, name=f"stop-{name}", daemon=True).start()
    return done.wait(seconds)


def start_watchdog(stop: StopSignal, hard_limit: float, poll: float = 0.25) -> threading.Thread:
    """A daemon thread that, ``hard_limit`` seconds after the stop signal, kills every descendant and ends this
    process, whatever its main thread is stuck on."""

    def watch() -> None:
        while not stop.received:
            time.sleep(poll)
        time.sleep(max(0.0, hard_limit - (time.monotonic() - (stop.at or time.monotonic()))))
        print(f"worker: not stopped {hard_limit:.0f} s after {stop.name}; killing what is left", file=sys.stderr)
        for proc in descendants():
            try:
                proc.kill()
            except psutil.Error:
                continue
        sys.stderr.flush()
        os._exit(1)

    thread = threading.Thread(target=watch, name="stop-watchdog", daemon=True)
    thread.start()
    return thread
