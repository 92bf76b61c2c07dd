"""``manage.py worker``: a worker cluster of this host (django-q2's cluster plus its agent)."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.utils import timezone

from notifications.dispatcher import Dispatcher
from scheduler.agent import Agent
from scheduler.reaper import training_runs_end_stopped, training_runs_reconcile_host
from workers.models import Worker
from workers.resources import capacity_of
from workers.services import WORKER_ID_ENV, worker_register, worker_stop
from workers.shutdown import StopSignal, call_with_deadline, descendants, end_processes, start_watchdog

# Seconds the cluster gets to stop its processes itself before what is left of them is ended.
STOP_GRACE = 10
# Seconds the outbox's dispatcher gets to finish the sends it started (a send's own timeouts are shorter).
DISPATCHER_GRACE = 10


def yield_cpu(nice: int) -> None:
    """Run this worker, and what it starts, at ``nice``: batch work yields the CPU to a web process or a database on
    the same host. Where the kernel groups processes by session (autogroup), niceness only weighs within a group:
    a worker that leads its own session (a service, a container, a test's cluster) lowers its group's weight too.
    Started from a terminal it shares the shell's group and leaves that alone."""
    if nice <= 0:
        return
    os.nice(nice)
    if os.getsid(0) == os.getpid():
        try:
            Path("/proc/self/autogroup").write_text(str(nice))
        except OSError:  # no autogroup on this kernel, or not allowed
            pass


class Command(BaseCommand):
    help = (
        "Start a worker cluster on this host: django-q2's cluster (training runs, evaluations, predict checks), "
        "its agent (heartbeat; idle capacity offered to waiting runs) and the outbox's dispatcher (webhooks, mail). "
        "It declares DUMPSITE_WORKER_GPUS and DUMPSITE_WORKER_CPU_SLOTS under the host identity DUMPSITE_HOST_ID, "
        "and takes only runs that fit them. "
        "Stop it with SIGTERM or Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--check",
            action="store_true",
            help=(
                "Only check (a container's health check): exit 0 when a worker of this host identity heartbeated "
                "within DUMPSITE_HEARTBEAT_LIMIT seconds, else 1 with the reason."
            ),
        )

    def handle(self, *args, **options):
        if options["check"]:
            return self.check_alive()
        # django-q2 sets up its cluster configuration on import: only where it is used
        from django_q.cluster import Cluster
        from django_q.conf import Conf

        settings.SECRET_KEY  # noqa: B018 - the cluster signs its tasks: refuse to start without a key
        yield_cpu(settings.DUMPSITE_WORKER_NICE)
        # First the truth about this host: runs whose worker process died with an earlier cluster fail now.
        for run_id in training_runs_reconcile_host():
            self.stdout.write(f"Run #{run_id} failed: its worker process on this host is gone.")
        worker = worker_register(processes=int(Conf.WORKERS or 1))
        # The cluster's processes (forked below) find their worker through the environment.
        os.environ[WORKER_ID_ENV] = str(worker.pk)
        connections.close_all()  # no connection may be shared with the forked processes
        self.stdout.write(
            f"Worker {worker.name}: {capacity_of(worker).describe()}, {worker.processes} run(s) at once.",
        )
        cluster = Cluster()
        # After Cluster(), which installs handlers of its own: SIGTERM / SIGINT are only recorded here, and the stop
        # happens below, in order and with a deadline for each step (workers.shutdown says what hung before).
        stop = StopSignal()
        stop.install()
        start_watchdog(stop, hard_limit=settings.DUMPSITE_WORKER_STOP_LIMIT)
        cluster.start()
        agent = Agent(worker, tick=settings.TRAINING_WORKER_TICK)
        agent.start()
        dispatcher = Dispatcher() if settings.DUMPSITE_DISPATCHER else None
        if dispatcher is not None:
            dispatcher.start()
        try:
            stop.wait(while_true=cluster.sentinel.is_alive)
        finally:
            if dispatcher is not None:
                dispatcher.stop()
            self.stop(cluster, agent, worker, stop)
            if dispatcher is not None:
                dispatcher.join(timeout=DISPATCHER_GRACE)

    def stop(self, cluster, agent: Agent, worker: Worker, stop: StopSignal) -> None:
        """The agent; then the cluster, gracefully for a few seconds (idle processes end at once; one busy with a
        training would finish it first); then whatever is left below this process; then the runs it held fail,
        resumable, with the reason."""
        began = time.monotonic()
        agent.stop()
        agent.join(timeout=5)
        if cluster.sentinel.is_alive():
            call_with_deadline(cluster.stop, STOP_GRACE, "cluster")
        end_processes(descendants(), grace=3)
        cluster.sentinel.join(timeout=1)
        reason = stop.name or "its sentinel died"
        try:
            for run_id in training_runs_end_stopped(worker=worker, signal_name=reason):
                self.stdout.write(f"Run #{run_id} failed: the worker was stopped ({reason}).")
            worker_stop(worker)
        finally:
            connections.close_all()
        self.stdout.write(f"Worker {worker.name} stopped ({reason}) in {time.monotonic() - began:.1f} s.")

    def check_alive(self) -> None:

        since = timezone.now() - timedelta(seconds=settings.TRAINING_HEARTBEAT_LIMIT)
        alive = Worker.objects.filter(host=settings.DUMPSITE_HOST_ID, stopped_at__isnull=True, heartbeat_at__gte=since)
        if not alive.exists():
            raise CommandError(
                f"No worker of host {settings.DUMPSITE_HOST_ID!r} heartbeated in the last "
                f"{settings.TRAINING_HEARTBEAT_LIMIT} s."
            )
        self.stdout.write(f"alive: {', '.join(alive.values_list('name', flat=True))}")
