"""``manage.py worker``: a worker cluster of this host (django-q2's cluster plus its agent)."""

from __future__ import annotations

import os
import signal
import threading
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.utils import timezone

from scheduler.agent import Agent
from scheduler.reaper import training_runs_reconcile_host
from workers.models import Worker
from workers.resources import capacity_of
from workers.services import WORKER_ID_ENV, worker_register, worker_stop


class Command(BaseCommand):
    help = (
        "Start a worker cluster on this host: django-q2's cluster (training runs, evaluations, predict checks) and "
        "its agent (heartbeat; idle capacity offered to waiting runs). It declares DUMPSITE_WORKER_GPUS and "
        "DUMPSITE_WORKER_CPU_SLOTS under the host identity DUMPSITE_HOST_ID, and takes only runs that fit them. "
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
        # SIGTERM / SIGINT only set a flag; the stop happens here, in order (agent, then cluster), never inside a
        # signal handler that interrupted the agent or a multiprocessing call halfway.
        stopping = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stopping.set())
        cluster.start()
        agent = Agent(worker, tick=settings.TRAINING_WORKER_TICK)
        agent.start()
        try:
            while not stopping.wait(0.5) and cluster.sentinel.is_alive():
                pass
        finally:
            agent.stop()
            agent.join(timeout=10)
            worker_stop(worker)
            connections.close_all()
            if cluster.sentinel.is_alive():
                cluster.stop()

    def check_alive(self) -> None:

        since = timezone.now() - timedelta(seconds=settings.TRAINING_HEARTBEAT_LIMIT)
        alive = Worker.objects.filter(host=settings.DUMPSITE_HOST_ID, stopped_at__isnull=True, heartbeat_at__gte=since)
        if not alive.exists():
            raise CommandError(
                f"No worker of host {settings.DUMPSITE_HOST_ID!r} heartbeated in the last "
                f"{settings.TRAINING_HEARTBEAT_LIMIT} s."
            )
        self.stdout.write(f"alive: {', '.join(alive.values_list('name', flat=True))}")
