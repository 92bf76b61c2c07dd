"""COCO export of 5k and 50k images with 10 boxes each, against json.dump of the finished dicts (the floor)."""

from __future__ import annotations

import json
import tempfile
import tracemalloc
from pathlib import Path

from django.conf import settings

from .common import Figure, alternate, median

SIZES, BOXES, REPETITIONS = (5_000, 50_000), 10, 3


def ensure_dataset(n: int):
    from datasets.models import Annotation, Dataset, DatasetImage
    from datasets.services import dataset_create

    name = f"bench-coco-{n}"
    dataset = Dataset.objects.filter(name=name).first()
    if dataset and dataset.images.count() == n:
        return dataset
    if dataset:
        dataset.images.all().delete()
        dataset.delete()
    dataset = dataset_create(name=name, class_names=["waste_pile", "construction_debris", "tyres"])
    classes = list(dataset.classes.order_by("position"))
    folder = Path(settings.MEDIA_ROOT) / "datasets" / str(dataset.pk) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    images = DatasetImage.objects.bulk_create(
        [
            DatasetImage(
                dataset=dataset,
                image=f"datasets/{dataset.pk}/images/{i:08d}.jpg",
                sha256=f"{i:064x}",
                original_name=f"{i}.jpg",
                width=512,
                height=512,
            )
            for i in range(n)
        ],
        batch_size=5000,
    )
    for image in images:
        (Path(settings.MEDIA_ROOT) / image.image.name).touch()
    Annotation.objects.bulk_create(
        [
            Annotation(image=image, dataset_class=classes[j % 3], x=10.0 * j, y=5.0 * j, width=30, height=20)
            for image in images
            for j in range(BOXES)
        ],
        batch_size=10000,
    )
    return dataset


def run() -> list[Figure]:
    from datasets.coco_export import build_coco, export_coco

    figures, peaks = [], {}
    for n in SIZES:
        dataset = ensure_dataset(n)
        train, val = build_coco(dataset, val_fraction=0.2, seed=0)
        out = Path(tempfile.mkdtemp(prefix="bench-coco-", dir=settings.TRAINING_WORK_ROOT.parent))

        def floor(train=train, val=val, out=out):
            for name, doc in (("train.json", train), ("val.json", val)):
                with open(out / name, "w", encoding="utf-8") as fh:
                    json.dump(doc, fh, ensure_ascii=False)

        def export(dataset=dataset, out=out):
            return export_coco(dataset, out / "export", val_fraction=0.2, seed=0)

        times = alternate({"export": export, "floor": floor}, REPETITIONS)
        ratio = median(times["export"]) / median(times["floor"])
        tracemalloc.start()
        build_coco(dataset, val_fraction=0.2, seed=0)
        peaks[n] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        figures.append(
            Figure(
                "coco export",
                f"{n:,} images: export / json.dump floor",
                f"{median(times['export']):.2f} s / {median(times['floor']):.2f} s = {ratio:.2f}x",
                "<= 2x at 50k" if n == 50_000 else "informative",
                ratio <= 2 if n == 50_000 else None,
            )
        )
    small, large = SIZES
    growth = (peaks[large] / large) / (peaks[small] / small)
    figures.append(
        Figure(
            "coco export",
            "peak memory per image, 50k vs 5k",
            f"{peaks[small]:.0f} MiB -> {peaks[large]:.0f} MiB ({growth:.2f}x per image)",
            "linear at most (<= 1.2x)",
            growth <= 1.2,
        )
    )
    return figures
