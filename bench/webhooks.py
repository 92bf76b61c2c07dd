"""Webhook delivery latency: from the commit of a run's end to the receiver's first byte, while the worker trains.

A real worker cluster trains a real run (its CPU busy, its one process taken); meanwhile runs waiting behind it are
cancelled one by one (each end a committed transaction, as the web commits it) and the training's own end is told
too. A receiver on the loopback address notes when each delivery arrives. The dispatcher is a thread of the worker,
woken by the commit, so no delivery waits for the training to end.
"""

from __future__ import annotations

import time

from django.conf import settings

from .common import Cluster, Figure, finished_run, percentile
from .training import trainer_session

CANCELLED = 30


def run() -> list[Figure]:
    from notifications.models import WebhookDelivery
    from notifications.services import webhook_subscription_create
    from tests.notifications.receiver import Receiver, verify
    from training.models import TrainingRun
    from training.services import training_run_cancel, training_run_create

    user, dataset, _ = trainer_session()
    settings.DUMPSITE_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    receiver = Receiver()
    subscription = webhook_subscription_create(
        user=user, url=receiver.url, events=["run.succeeded", "run.cancelled"], name="bench"
    )
    latencies: list[float] = []
    try:
        with Cluster("qcluster-webhooks.log", DUMPSITE_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32") as cluster:
            training = training_run_create(
                dataset=dataset, parameters={"epochs": 4}, created_by=user, name="bench hook"
            )
            start = time.time()
            while not TrainingRun.objects.filter(pk=training.pk, training_pid__isnull=False).exists():
                time.sleep(0.2)
            for i in range(CANCELLED):
                waiting = training_run_create(dataset=dataset, parameters={"epochs": 1}, created_by=user, name=f"w{i}")
                training_run_cancel(run=waiting, user=user)  # committed on return (autocommit)
                ended = TrainingRun.objects.values_list("finished_at", flat=True).get(pk=waiting.pk)
                assert ended is not None
                latencies.append(_arrival(receiver, waiting.pk, timeout=30) - ended.timestamp())
                time.sleep(0.5)
            assert TrainingRun.objects.filter(pk=training.pk, status="running").exists(), "the training ended early"
            _, trained = finished_run(training.pk, start, interval=1.0, what="run")
            own = _arrival(receiver, trained.pk, timeout=60) - trained.finished_at.timestamp()
            cluster.wait_idle(0.5)
        signed = all(verify(subscription.secret, r.headers, r.body) for r in receiver.received)
        delivered = WebhookDelivery.objects.filter(subscription=subscription, status="delivered").count()
    finally:
        receiver.close()
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    return [
        Figure(
            "webhooks",
            f"run end committed -> receiver, while the worker trains ({CANCELLED} ends), p50 / p95",
            f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms",
            "p95 <= 5 s",
            p95 <= 5.0,
        ),
        Figure("webhooks", "the training's own end -> receiver", f"{own * 1000:.0f} ms", "<= 5 s", own <= 5.0),
        Figure(
            "webhooks",
            "deliveries delivered, each signature valid",
            f"{delivered} of {CANCELLED + 1}, {'all' if signed else 'NOT all'} valid",
            "all",
            delivered == CANCELLED + 1 and signed,
        ),
    ]


def _arrival(receiver, run_id: int, timeout: float) -> float:
    """When the receiver got the first delivery about run ``run_id`` (time.time())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for request in list(receiver.received):
            if request.json["objects"]["run"]["id"] == run_id:
                return request.at
        time.sleep(0.01)
    raise TimeoutError(f"no delivery about run {run_id} within {timeout} s")
