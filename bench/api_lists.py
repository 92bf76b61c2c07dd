"""API list and progress latency with 10k runs and 1k models under object permissions, for a non-superuser."""

from __future__ import annotations

import time

from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from .common import Figure, percentile
from .training import ensure_trainer

RUNS, MODELS, REQUESTS = 10_000, 1_000, 40


def ensure_data() -> User:
    from access.roles import CREATOR_PERMS
    from datasets.models import Dataset
    from models_registry.models import TrainedModel, TrainedModelUserObjectPermission
    from training.models import TrainingRun, TrainingRunUserObjectPermission

    user = ensure_trainer()
    User.objects.filter(username="bench-root").exists() or User.objects.create_superuser("bench-root")
    dataset, _ = Dataset.objects.get_or_create(name="bench-api")
    have = TrainingRun.objects.filter(dataset=dataset).count()
    if have < RUNS:
        runs = TrainingRun.objects.bulk_create(
            [
                TrainingRun(
                    name=f"bench run {i}",
                    dataset=dataset,
                    status=("succeeded", "failed", "running")[i % 3],
                    parameters={"epochs": 5},
                    created_by=user,
                )
                for i in range(have, RUNS)
            ],
            batch_size=2000,
        )
        perms = [Permission.objects.get(codename=p.split(".")[1]) for p in CREATOR_PERMS["trainingrun"]]
        TrainingRunUserObjectPermission.objects.bulk_create(
            [TrainingRunUserObjectPermission(user=user, permission=p, content_object=r) for r in runs for p in perms],
            batch_size=5000,
        )
    have = TrainedModel.objects.filter(dataset=dataset).count()
    if have < MODELS:
        models = TrainedModel.objects.bulk_create(
            [
                TrainedModel(
                    name=f"bench model {i}",
                    dataset=dataset,
                    architecture="retinanet_r18_tiny",
                    class_names=["waste"],
                    artifact_key=f"bench{i:08d}",
                    checkpoint="x",
                    config="x",
                    checkpoint_sha256="0",
                    config_sha256="0",
                    bbox_mAP_50=(i % 100) / 100,
                    created_by=user,
                    is_published=i % 10 == 0,
                )
                for i in range(have, MODELS)
            ],
            batch_size=2000,
        )
        perms = [Permission.objects.get(codename=p.split(".")[1]) for p in CREATOR_PERMS["trainedmodel"]]
        TrainedModelUserObjectPermission.objects.bulk_create(
            [
                TrainedModelUserObjectPermission(user=user, permission=p, content_object=m)
                for m in models
                for p in perms
            ],
            batch_size=5000,
        )
    with connection.cursor() as cursor:  # planner statistics, as autovacuum keeps them on a live database
        cursor.execute("ANALYZE")
    return user


def _client(username: str) -> Client:
    client = Client()
    client.force_login(User.objects.get(username=username))
    return client


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200, url
    return len(ctx)


def run() -> list[Figure]:
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    user = ensure_data()
    from training.models import TrainingRun

    some_run = TrainingRun.objects.filter(created_by=user).order_by("-id").values_list("pk", flat=True).first()
    trainer, root = _client("bench-trainer"), _client("bench-root")
    endpoints = {
        "runs list": "/api/training-runs/?page_size=50",
        "models list": "/api/trained-models/?page_size=50",
        "datasets list": "/api/datasets/",
        "run progress": f"/api/training-runs/{some_run}/progress/",
    }
    figures = []
    for name, url in endpoints.items():
        for client in (trainer, root):  # warm up both
            client.get(url)
        times: dict[str, list[float]] = {"trainer": [], "root": []}
        for _ in range(REQUESTS):  # alternate: the trainer (object permissions) and a superuser (no filter)
            for who, client in (("trainer", trainer), ("root", root)):
                start = time.perf_counter()
                assert client.get(url).status_code == 200
                times[who].append((time.perf_counter() - start) * 1000)
        p50, p95 = percentile(times["trainer"], 0.5), percentile(times["trainer"], 0.95)
        ratio = p50 / percentile(times["root"], 0.5)
        figures.append(
            Figure("api", f"{name} p50 / p95 (Trainer)", f"{p50:.1f} / {p95:.1f} ms", "p95 <= 50 ms", p95 <= 50)
        )
        figures.append(Figure("api", f"{name}: Trainer / superuser p50", f"{ratio:.2f}x", "informative", None))
        if "list" in name:
            small, large = (_queries(trainer, url.split("?")[0] + f"?page_size={n}") for n in (10, 200))
            figures.append(
                Figure("api", f"{name} queries, page 10 vs 200", f"{small} vs {large}", "equal", small == large)
            )
    return figures
