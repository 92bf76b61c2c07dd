"""/metrics with 10,000 runs in the database (those of the api_lists benchmark, with phase timings and durations),
beside the API's own run-progress answer (the cheapest a client polls), alternating, in this process."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from .api_lists import RUNS, ensure_data
from .common import Figure, percentile

REQUESTS = 60


def with_timings() -> None:
    """The finished runs get what a real one records: a start, an end and its phase timings."""
    from training.models import TrainingRun

    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {TrainingRun._meta.db_table} SET
                  started_at = created_at,
                  finished_at = created_at + make_interval(secs => 60 + (id %% 5000)),
                  timings = jsonb_build_object('queued', id %% 30, 'export', 2.5, 'config', 0.1, 'startup', 4,
                                               'training', 50 + (id %% 5000), 'registration', 1.5)
                WHERE name LIKE %s AND status IN ('succeeded', 'failed') AND started_at IS NULL""",  # noqa: S608
            ["bench run %"],
        )


def run() -> list[Figure]:
    from django.contrib.auth.models import User

    from training.models import TrainingRun

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.DUMPSITE_METRICS_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    ensure_data()
    with_timings()
    total = TrainingRun.objects.count()
    root = Client()
    root.force_login(User.objects.get(username="bench-root"))
    some_run = TrainingRun.objects.order_by("-id").values_list("pk", flat=True).first()
    scraper = Client()
    urls = {"metrics": (scraper, "/metrics"), "progress": (root, f"/api/training-runs/{some_run}/progress/")}
    for client, url in urls.values():
        assert client.get(url).status_code == 200, url
    connection.queries_log.clear()  # a full log (it keeps 9,000) would count nothing new
    with CaptureQueriesContext(connection) as seen:
        body = scraper.get("/metrics").content
    times: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(REQUESTS):
        for name, (client, url) in urls.items():
            began = time.perf_counter()
            assert client.get(url).status_code == 200
            times[name].append(time.perf_counter() - began)
    p50, p95 = percentile(times["metrics"], 0.5), percentile(times["metrics"], 0.95)
    progress = percentile(times["progress"], 0.5)
    return [
        Figure(
            "metrics",
            f"/metrics with {total:,} runs ({RUNS:,} of the bench), p50 / p95",
            f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms",
            "p95 <= 100 ms",
            p95 <= 0.100,
        ),
        Figure(
            "metrics",
            "its queries; its size; a run's /progress/ p50 beside it",
            f"{len(seen)} queries; {len(body) / 1024:.0f} KiB; {progress * 1000:.1f} ms",
            "informative",
            None,
        ),
    ]
