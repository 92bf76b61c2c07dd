"""The agent of a worker cluster: a thread beside django-q2's cluster in ``manage.py worker`` that, every tick
(DUMPSITE_WORKER_TICK seconds), beats the cluster's heartbeat, fails the runs of this host whose worker process is
gone, reaps runs whose worker stopped heartbeating (at the heartbeat's own scale, not a schedule's minute:
whichever host's agent notices first fails the run, once) and dataset imports and labelling tasks left behind by a
dead worker, and,
when the cluster has an idle process while a run it could take waits (the run's own task went to a cluster that
could not take it, or resources freed up elsewhere), asks the queue for a take."""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections, connection

from datasets.import_execution import dataset_imports_fail_stale
from labelling.building import labelling_tasks_fail_stale
from workers.gpus import gpu_memory
from workers.models import Worker
from workers.services import worker_heartbeat

from .queue import training_runs_offer
from .reaper import training_runs_reap_stale, training_runs_reconcile_host

logger = logging.getLogger(__name__)
GPU_READ_EVERY = 15.0  # seconds between two readings of the GPUs' memory (nvidia-smi takes tens of ms)


class Agent(threading.Thread):
    def __init__(self, worker: Worker, *, tick: float):
        super().__init__(name="worker-agent", daemon=True)
        self.worker = worker
        self.tick = tick
        self.stopping = threading.Event()
        self.offered: dict[int, float] = {}  # run id -> when the agent last asked for a take for it
        self.gpus_read = -GPU_READ_EVERY  # when the GPUs' memory was last read

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.tick):
                try:
                    self.beat()
                except Exception:  # noqa: BLE001 - a lost database connection must not end the agent
                    logger.exception("worker agent %s: beat failed", self.worker.name)
                    close_old_connections()
        finally:
            connection.close()

    def beat(self) -> None:
        now = time.monotonic()
        if self.worker.gpus and now - self.gpus_read >= GPU_READ_EVERY:
            self.gpus_read = now
            worker_heartbeat(self.worker, gpu_memory=gpu_memory(self.worker.gpus))
        else:
            worker_heartbeat(self.worker)
        training_runs_reconcile_host()
        training_runs_reap_stale()
        dataset_imports_fail_stale()
        labelling_tasks_fail_stale()
        now = time.monotonic()
        self.offered = {k: v for k, v in self.offered.items() if now - v < 10 * self.tick}
        waiting = training_runs_offer(self.worker, waited=2 * self.tick, skip=set(self.offered))
        if waiting is not None:
            self.offered[waiting] = now
            logger.info("worker %s is idle while run %s waits: asked for a take", self.worker.name, waiting)

    def stop(self) -> None:
        self.stopping.set()
