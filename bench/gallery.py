"""The gallery of an evaluation of 5,000 validation images: the admin's gallery page and the API's gallery endpoint,
each asked for pages across the whole set (worst first, by class), p50 and p95 of the response time."""

from __future__ import annotations

import random
import time

from django.test import Client

from .common import Figure, percentile

GALLERY_IMAGES = 5_000
REQUESTS = 60


def _gallery_evaluation(model, dataset):
    """An evaluation of 5,000 images (rows made directly: the page reads rows, never the pictures)."""
    from models_registry.models import Evaluation, EvaluationImage

    evaluation = Evaluation.objects.filter(model=model, split="bench gallery").first()
    if evaluation is not None and evaluation.images.count() == GALLERY_IMAGES:
        return evaluation
    if evaluation is not None:
        evaluation.delete()
    classes = list(model.class_names)
    evaluation = Evaluation.objects.create(
        model=model,
        dataset=dataset,
        kind=Evaluation.Kind.EVALUATION,
        split="bench gallery",
        score_threshold=0.3,
        iou_threshold=0.5,
        confusion={"labels": [*classes, "background"], "matrix": []},
        counts={"images": GALLERY_IMAGES},
    )
    image = dataset.images.first()
    rng = random.Random(0)
    rows = []
    for _ in range(GALLERY_IMAGES):
        tp, fp, fn = rng.randint(0, 6), rng.randint(0, 4), rng.randint(0, 4)
        cls = rng.randrange(len(classes))
        rows.append(
            EvaluationImage(
                evaluation=evaluation,
                image=image,
                file_name=image.image.name,
                width=image.width,
                height=image.height,
                true_positives=tp,
                false_positives=fp,
                false_negatives=fn,
                errors=fp + fn,
                classes=[cls],
                detections=[[cls, 0.9, 10, 10, 40, 40, "tp"]] * tp + [[cls, 0.5, 60, 60, 30, 30, "fp"]] * fp,
                ground_truth=[[cls, 10, 10, 40, 40, "found"]] * tp + [[cls, 100, 100, 20, 20, "missed"]] * fn,
            )
        )
    EvaluationImage.objects.bulk_create(rows, batch_size=1000)
    return evaluation


def _timed(client: Client, urls: list[str]) -> list[float]:
    times = []
    for url in urls:
        start = time.perf_counter()
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code}")
        times.append((time.perf_counter() - start) * 1000)
    return times


def run() -> list[Figure]:
    from django.contrib.auth.models import User

    from .evaluation import _model
    from .training import trainer_session

    _user, dataset, client = trainer_session()
    model = _model(client, dataset)
    figures = []
    evaluation = _gallery_evaluation(model, dataset)
    admin = User.objects.filter(username="bench-admin").first() or User.objects.create_superuser("bench-admin")
    staff = Client()
    staff.force_login(admin)
    pages = GALLERY_IMAGES // 48 + 1
    rng = random.Random(1)
    names = list(model.class_names)
    admin_urls, api_urls = [], []
    for i in range(REQUESTS):
        # Every third request filters by a class (about half the images): its pages stay within that half.
        filtered = i % 3 == 0
        cls = f"&class={names[i % len(names)]}" if filtered else ""
        admin_page = rng.randint(1, pages // 3 if filtered else pages)
        api_page = rng.randint(1, GALLERY_IMAGES // 50 // 3 if filtered else GALLERY_IMAGES // 50)
        admin_urls.append(
            f"/admin/models_registry/evaluation/{evaluation.pk}/gallery/?order=worst&page={admin_page}{cls}"
        )
        api_urls.append(f"/api/evaluations/{evaluation.pk}/images/?order=worst&page={api_page}{cls}")
    _timed(staff, admin_urls[:5] + api_urls[:5])  # warm-up
    for name, client_, urls in (("admin gallery page", staff, admin_urls), ("API gallery page", staff, api_urls)):
        times = _timed(client_, urls)
        p50, p95 = percentile(times, 0.5), percentile(times, 0.95)
        figures.append(
            Figure(
                "gallery",
                f"{name}, {GALLERY_IMAGES:,} images: p50 / p95",
                f"{p50:.1f} / {p95:.1f} ms",
                "p95 <= 100 ms",
                p95 <= 100,
            )
        )
    return figures
