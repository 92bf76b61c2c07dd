"""The review queue of a detection run with 10,000 detections (`bash bench/run.sh review_queue`): the page's latency
as the run's owner (a Trainer: object permissions), p50 and p95 over repeated loads of its first page and of a
filtered one (a score band of one class), and its query count against a run of 100 detections (constant)."""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib.gis.geos import Polygon
from django.db import connection, transaction
from django.test import Client

from .api_lists import _queries
from .common import Figure, built_detection_run, percentile
from .training import ensure_trainer

DETECTIONS, SMALL, REQUESTS = 10_000, 100, 40


def box(extent: tuple[float, float, float, float]) -> Polygon:
    polygon = Polygon.from_bbox(extent)
    polygon.srid = 4326
    return polygon


@transaction.atomic
def _run(user, name: str, count: int):
    """A finished detection run of ``count`` detections over one orthophoto row (no file: the page reads none)."""
    from access.roles import CREATOR_PERMS
    from access.rules import grant
    from datasets.models import Dataset, Orthophoto
    from detection.models import Detection
    from models_registry.models import TrainedModel
    from training.models import TrainingRun

    found = built_detection_run(name, count)
    if found is not None:
        return found
    dataset, _ = Dataset.objects.get_or_create(name="bench-review")
    ortho = Orthophoto.objects.filter(dataset=dataset).first() or Orthophoto.objects.create(
        dataset=dataset, name="area.tif", file="x.tif", sha256=f"{dataset.pk:064d}", size_bytes=1,
        width=20_000, height=20_000, bands=3, georeferenced=True, srid=4326,
        geotransform=[14.5, 1e-6, 0.0, 46.1, 0.0, -1e-6],
        footprint=box((14.5, 46.08, 14.52, 46.1)),
    )  # fmt: skip
    model = TrainedModel.objects.filter(name="bench-review model").first() or TrainedModel.objects.create(
        name="bench-review model", dataset=dataset, architecture="retinanet_r18_tiny",
        class_names=["waste_pile", "construction_debris"], artifact_key="benchreview", checkpoint="x", config="x",
        checkpoint_sha256="0", config_sha256="0", created_by=user,
    )  # fmt: skip
    run = TrainingRun.objects.create(
        name=name, kind="detect", dataset=dataset, evaluated_model=model, status="succeeded", created_by=user,
        parameters={"orthophotos": [ortho.pk], "score_threshold": 0.3, "classes": model.class_names},
        export_summary={"detections": count, "coordinates": "map"},
    )  # fmt: skip
    grant(user, CREATOR_PERMS["trainingrun"], run)
    rows = []
    for i in range(count):
        x, y = (i % 100) * 190.0, (i // 100) * 190.0
        lon, lat = 14.5 + x * 1e-6, 46.1 - y * 1e-6
        rows.append(
            Detection(
                run=run,
                orthophoto=ortho,
                label=i % 2,
                class_name=model.class_names[i % 2],
                score=0.3 + 0.7 * ((i * 7919) % 1000) / 1000,
                geometry=box((lon, lat - 60e-6, lon + 60e-6, lat)),
                area_m2=20.0,
                pixel_box=[x, y, x + 60, y + 60],
            )  # fmt: skip
        )
    Detection.objects.bulk_create(rows, batch_size=2000)
    return run


def run() -> list[Figure]:
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    user = ensure_trainer()
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    big, small = _run(user, "bench review 10k", DETECTIONS), _run(user, "bench review 100", SMALL)
    with connection.cursor() as cursor:  # planner statistics, as autovacuum keeps them on a live database
        cursor.execute("ANALYZE detection_detection")
    client = Client()
    client.force_login(user)
    figures = []
    for name, query in (
        ("first page", ""),
        ("one class, score 0.4-0.6", "?class=waste_pile&min_score=0.4&max_score=0.6"),
    ):
        url = f"/admin/detection/detectionrun/{big.pk}/review/{query}"
        client.get(url)  # warm up
        times = []
        for _ in range(REQUESTS):
            start = time.perf_counter()
            assert client.get(url).status_code == 200
            times.append((time.perf_counter() - start) * 1000)
        p50, p95 = percentile(times, 0.5), percentile(times, 0.95)
        figures.append(
            Figure(
                "review",
                f"review queue of {DETECTIONS:,} detections, {name}: p50 / p95 (Trainer)",
                f"{p50:.1f} / {p95:.1f} ms",
                "p95 <= 100 ms",
                p95 <= 100,
            )
        )
    many, few = (_queries(client, f"/admin/detection/detectionrun/{r.pk}/review/") for r in (big, small))
    figures.append(
        Figure("review", f"queries, {DETECTIONS:,} vs {SMALL} detections", f"{many} vs {few}", "equal", many == few)
    )
    return figures
