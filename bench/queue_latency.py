"""Queue latency: from the create call returning to the training child process starting, with an idle worker.

Alternates with django-q2's own latency (an empty task handed to the same cluster): the difference is what the
platform adds before the child starts (claim, COCO export, config, process spawn).
"""

from __future__ import annotations

import psutil
from django.contrib.auth.models import User
from django.test import Client

from workers.cluster import wait_for

from .common import SCRATCH, Cluster, Figure, boottime, percentile, process_start_boottime
from .training import trainer_session

SAMPLES = 10


def _platform_sample(client: Client, dataset_id: int, user: User) -> float:
    from training.models import TrainingRun
    from training.services import training_run_cancel

    response = client.post(
        "/api/training-runs/", {"dataset": dataset_id, "parameters": {"epochs": 1}}, content_type="application/json"
    )
    returned = boottime()
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    pid = _until(lambda: TrainingRun.objects.filter(pk=run_id).values_list("training_pid", flat=True).first(), 60)
    latency = process_start_boottime(pid) - returned
    training_run_cancel(run=TrainingRun.objects.get(pk=run_id), user=user)
    _until(
        lambda: not psutil.pid_exists(pid) and TrainingRun.objects.filter(pk=run_id, status="cancelled").exists(),
        60,
        interval=0.1,
    )
    return latency


def _queue_sample() -> float:
    from django_q.tasks import async_task

    marker = SCRATCH / "probe-start.txt"
    marker.unlink(missing_ok=True)
    async_task("bench.probe.note_start", str(marker))
    queued = boottime()
    _until(lambda: marker.exists() and marker.read_text(), 30)
    return float(marker.read_text()) - queued


def run() -> list[Figure]:
    user, dataset, client = trainer_session()
    platform, queue = [], []
    with Cluster("qcluster-queue-latency.log") as cluster:
        for _ in range(SAMPLES):
            platform.append(_platform_sample(client, dataset.pk, user))
            cluster.wait_idle(1.0)
            queue.append(_queue_sample())
            cluster.wait_idle(1.0)
    p50, p95, q50 = percentile(platform, 0.5), percentile(platform, 0.95), percentile(queue, 0.5)
    return [
        Figure(
            "queue latency",
            "create returned -> child process started, p50 / p95",
            f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms",
            "p50 <= 500 ms",
            p50 <= 0.5,
        ),
        Figure(
            "queue latency", "of which django-q2 itself (empty task), p50", f"{q50 * 1000:.0f} ms", "informative", None
        ),
    ]


def _until(predicate, timeout: float, interval: float = 0.005):
    return wait_for(predicate, timeout, interval, message="the worker")
