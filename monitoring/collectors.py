"""The platform's own metrics, read from the database at each scrape (any web process answers the same, and a
restart loses nothing): jobs queued by kind and device and the oldest one's age, runs by kind and state, run and
phase durations as histograms, each worker's heartbeat age and GPU memory, dead workers found, images imported and
windows detected (counters: Prometheus' ``rate()`` gives them per second), the outbox. A constant number of
queries, whatever the number of runs (tests/monitoring)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from audit.models import AuditEvent
from datasets.models import DatasetImport
from labelling.models import LabellingTask
from models_registry.models import Prediction
from notifications.models import OutgoingMail, WebhookDelivery
from training.models import TrainingRun
from workers.models import Worker

# Upper bounds (seconds) of the histograms' buckets: runs last minutes to a day; phases seconds to hours.
RUN_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400)
PHASE_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 14400, 86400)


def rows(sql: str, params: list | dict | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def histogram(name: str, doc: str, label: str, found: dict[str, tuple[list[int], float]], bounds) -> Metric:
    """``found``: label value -> (cumulative counts per bound, then the total; the sum)."""
    family = HistogramMetricFamily(name, doc, labels=[label])
    for value, (counts, total) in sorted(found.items()):
        buckets = [(str(float(b)), c) for b, c in zip(bounds, counts[:-1], strict=True)] + [("+Inf", counts[-1])]
        family.add_metric([value], buckets, total)
    return family


class PlatformCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from self.queue()
        yield from self.runs()
        yield from self.workers()
        yield from self.throughput()
        yield from self.outbox()

    def queue(self) -> Iterator[Metric]:
        runs = TrainingRun._meta.db_table
        found = rows(
            f"""SELECT kind, COALESCE(parameters->>'device', 'cpu'), count(*),
                       EXTRACT(EPOCH FROM now() - min(created_at))
                FROM {runs} WHERE status = 'queued' GROUP BY 1, 2"""  # noqa: S608 - table names from the models
        )
        for model, kind in ((DatasetImport, "import"), (Prediction, "predict"), (LabellingTask, "labelling")):
            table = model._meta.db_table
            found += rows(
                f"""SELECT %s, 'cpu', count(*), EXTRACT(EPOCH FROM now() - min(created_at))
                    FROM {table} WHERE status = 'queued' HAVING count(*) > 0""",  # noqa: S608
                [kind],
            )
        queued = GaugeMetricFamily(
            "dumpsite_jobs_queued", "Jobs waiting for a worker, by kind and device.", labels=["kind", "device"]
        )
        oldest = GaugeMetricFamily(
            "dumpsite_queue_oldest_seconds", "Age of the oldest waiting job, by kind.", labels=["kind"]
        )
        ages: dict[str, float] = {}
        for kind, device, count, age in found:
            queued.add_metric([kind, device], count)
            ages[kind] = max(ages.get(kind, 0.0), float(age or 0))
        for kind, age in sorted(ages.items()):
            oldest.add_metric([kind], age)
        yield queued
        yield oldest

    def runs(self) -> Iterator[Metric]:
        runs = TrainingRun._meta.db_table
        states = GaugeMetricFamily("dumpsite_runs", "Runs by kind and state.", labels=["kind", "state"])
        for kind, status, count in rows(f"SELECT kind, status, count(*) FROM {runs} GROUP BY 1, 2"):  # noqa: S608
            states.add_metric([kind, status], count)
        yield states

        seconds = "EXTRACT(EPOCH FROM finished_at - started_at)"
        le = ", ".join(f"count(*) FILTER (WHERE {seconds} <= {b})" for b in RUN_BUCKETS)
        found = {
            kind: (list(counts), float(total or 0))
            for kind, *counts, total in rows(
                f"""SELECT kind, {le}, count(*), sum({seconds}) FROM {runs}
                    WHERE status IN ('succeeded', 'failed', 'cancelled')
                      AND started_at IS NOT NULL AND finished_at IS NOT NULL
                    GROUP BY kind"""  # noqa: S608
            )
        }
        yield histogram(
            "dumpsite_run_duration_seconds",
            "How long finished runs ran (start to end), by kind.",
            "kind",
            found,
            RUN_BUCKETS,
        )

        phases = []
        for phase in TrainingRun.PHASES:
            value = f"(timings->>'{phase}')::float"
            buckets = [f"count(*) FILTER (WHERE {value} <= {b})" for b in PHASE_BUCKETS]
            phases.append(", ".join([*buckets, f"count({value})", f"sum({value})"]))
        (flat,) = rows(f"SELECT {', '.join(phases)} FROM {runs} WHERE status = 'succeeded'")  # noqa: S608
        width = len(PHASE_BUCKETS) + 2
        found = {}
        for i, phase in enumerate(TrainingRun.PHASES):
            part = flat[i * width : (i + 1) * width]
            found[phase] = (list(part[:-1]), float(part[-1] or 0))
        yield histogram(
            "dumpsite_run_phase_seconds",
            "Where succeeded runs spent their time: queued, export, config, startup, training, registration.",
            "phase",
            found,
            PHASE_BUCKETS,
        )

    def workers(self) -> Iterator[Metric]:
        now = timezone.now()
        since = now - timedelta(seconds=settings.TRAINING_WORKER_FORGET)
        live = Worker.objects.filter(stopped_at__isnull=True, heartbeat_at__gte=since).order_by("host", "name")
        age = GaugeMetricFamily(
            "dumpsite_worker_heartbeat_age_seconds",
            "Seconds since each running worker cluster last beat (a stopped one is not listed).",
            labels=["host", "worker"],
        )
        used = GaugeMetricFamily(
            "dumpsite_gpu_memory_used_bytes", "GPU memory in use, per worker's GPU.", labels=["host", "worker", "gpu"]
        )
        total = GaugeMetricFamily(
            "dumpsite_gpu_memory_total_bytes", "GPU memory, per worker's GPU.", labels=["host", "worker", "gpu"]
        )
        for worker in live.only("host", "name", "heartbeat_at", "gpu_memory"):
            age.add_metric([worker.host, worker.name], (now - worker.heartbeat_at).total_seconds())
            for gpu in worker.gpu_memory or []:
                used.add_metric([worker.host, worker.name, str(gpu["gpu"])], gpu["used_bytes"])
                total.add_metric([worker.host, worker.name, str(gpu["gpu"])], gpu["total_bytes"])
        yield age
        yield used
        yield total
        reaped = AuditEvent.objects.filter(action="failed", object_type="trainingrun", detail__reaped=True).count()
        yield CounterMetricFamily(
            "dumpsite_dead_workers_found",
            "Runs failed because their worker died or stopped beating (found by the reaper or the host's agent).",
            value=reaped,
        )

    def throughput(self) -> Iterator[Metric]:
        imports, runs = DatasetImport._meta.db_table, TrainingRun._meta.db_table
        ((images,),) = rows(f"SELECT COALESCE(sum(images_imported), 0) FROM {imports} WHERE status = 'succeeded'")  # noqa: S608
        ((windows,),) = rows(
            f"""SELECT COALESCE(sum((export_summary->>'windows')::bigint), 0) FROM {runs}
                WHERE kind = 'detect' AND status = 'succeeded'"""  # noqa: S608
        )
        yield CounterMetricFamily(
            "dumpsite_images_imported", "Images imported by dataset imports that succeeded.", value=images
        )
        yield CounterMetricFamily(
            "dumpsite_windows_detected", "Orthophoto windows detection runs that succeeded went through.", value=windows
        )

    def outbox(self) -> Iterator[Metric]:
        deliveries = WebhookDelivery._meta.db_table
        webhooks = GaugeMetricFamily(
            "dumpsite_webhook_deliveries_last_day", "Webhook deliveries of the last 24 h by state.", labels=["state"]
        )
        for status, count in rows(
            f"""SELECT status, count(*) FROM {deliveries} WHERE created_at > now() - interval '1 day'
                GROUP BY status"""  # noqa: S608
        ):
            webhooks.add_metric([status], count)
        yield webhooks
        ((pending, age),) = rows(
            f"""SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at)) FROM {deliveries}
                WHERE status = 'pending'"""  # noqa: S608
        )
        yield GaugeMetricFamily("dumpsite_webhook_pending", "Webhook deliveries not yet delivered.", pending)
        yield GaugeMetricFamily(
            "dumpsite_webhook_oldest_pending_seconds",
            "Age of the oldest webhook delivery not yet delivered (0: none).",
            float(age or 0),
        )
        mails = GaugeMetricFamily(
            "dumpsite_mails_pending",
            "Mails not yet sent.",
            OutgoingMail.objects.filter(status=OutgoingMail.Status.PENDING).count(),
        )
        yield mails
