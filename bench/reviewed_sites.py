"""1,000 reviewed sites of a detection run into a new dataset (`bash bench/run.sh reviewed_sites`): the platform
(``reviewed_sites_to_dataset`` and the dataset import a worker runs: the tiling, the images' checks and rows, the
boxes with their provenance) against the tiling floor of the same windows, GDAL's own translation of each to JPEG
(``gdal_translate -srcwin``, as the ``ortho_tiling`` bench's floor). Alternated, medians; the 20,000 x 20,000 px
orthophoto of the tiling bench, windows of 1,024 px."""

from __future__ import annotations

import re
import time

import numpy as np
from django.db import transaction

from .common import Figure, built_detection_run, median
from .ortho_tiling import _drop, _floor, build_orthophoto

SITES, TILE, REPETITIONS = 1_000, 1024, 2
NAME = "bench reviewed sites"


@transaction.atomic
def _run(user):
    """A finished detection run over the orthophoto with SITES confirmed detections (built once)."""
    from datasets.models import Dataset, Orthophoto
    from datasets.orthophotos import orthophoto_store
    from detection.models import Detection
    from detection.review import place
    from models_registry.models import TrainedModel
    from training.models import TrainingRun

    found = built_detection_run(NAME, SITES)
    if found is not None:
        return found
    dataset, _ = Dataset.objects.get_or_create(name="bench-reviewed-area")
    ortho = Orthophoto.objects.filter(dataset=dataset).first() or orthophoto_store(
        dataset=dataset, source=build_orthophoto(20_000), name="area.tif"
    )
    model = TrainedModel.objects.filter(name=f"{NAME} model").first() or TrainedModel.objects.create(
        name=f"{NAME} model", dataset=dataset, architecture="retinanet_r18_tiny", class_names=["waste_pile"],
        artifact_key="benchreviewed", checkpoint="x", config="x", checkpoint_sha256="0", config_sha256="0",
    )  # fmt: skip
    run = TrainingRun.objects.create(
        name=NAME, kind="detect", dataset=dataset, evaluated_model=model, status="succeeded", created_by=user,
        parameters={"orthophotos": [ortho.pk], "tile_size": TILE, "score_threshold": 0.3},
    )  # fmt: skip
    rng = np.random.default_rng(9)
    rows = []
    for _ in range(SITES):
        x, y = rng.uniform(0, ortho.width - 130), rng.uniform(0, ortho.height - 130)
        w, h = rng.uniform(40, 120, 2)
        detection = Detection(
            run=run, orthophoto=ortho, label=0, class_name="waste_pile", score=float(rng.uniform(0.3, 1)),
            state="confirmed", reviewed_by=user,
        )  # fmt: skip
        place(detection, [round(x, 2), round(y, 2), round(x + w, 2), round(y + h, 2)])
        rows.append(detection)
    Detection.objects.bulk_create(rows, batch_size=1000)
    return run


def _platform(run, user, name: str) -> tuple[float, list[tuple[int, int, int, int]]]:
    """Service call to stored rows; the windows the import kept (from the tiles' names)."""
    from datasets.import_execution import dataset_import_execute
    from datasets.models import DatasetImage
    from detection.to_dataset import reviewed_sites_to_dataset

    start = time.perf_counter()
    job = reviewed_sites_to_dataset(run=run, user=user, dataset_name=name, tile_size=TILE, overlap=0)
    assert dataset_import_execute(import_id=job.pk) == "succeeded", job.pk
    wall = time.perf_counter() - start
    job.refresh_from_db()
    windows = []
    for original in DatasetImage.objects.filter(dataset=job.dataset).values_list("original_name", flat=True):
        match = re.search(r"_x(\d+)_y(\d+)\.jpg$", original)
        assert match, original
        windows.append((int(match[1]), int(match[2]), TILE, TILE))
    return wall, windows


def run() -> list[Figure]:
    from django.contrib.auth.models import User

    user = User.objects.filter(username="bench-root").first() or User.objects.create_superuser("bench-root")
    detection_run = _run(user)
    path = build_orthophoto(20_000)
    platform: list[float] = []
    floor: list[float] = []
    windows: list[tuple[int, int, int, int]] = []
    for i in range(REPETITIONS):
        name = f"{NAME} {i}"
        _drop(name)
        wall, windows = _platform(detection_run, user, name)
        platform.append(wall)
        _drop(name)
        start = time.perf_counter()
        _floor(path, windows)
        floor.append(time.perf_counter() - start)
        print(f"  pair {i + 1}/{REPETITIONS}: platform {wall:.1f} s, floor {floor[-1]:.1f} s", flush=True)
    p, f = median(platform), median(floor)
    return [
        Figure(
            "reviewed_sites",
            f"{SITES:,} reviewed sites into a dataset ({len(windows)} tiles of {TILE} px) / gdal_translate of the "
            "same windows, median",
            f"{p:.1f} s / {f:.1f} s = {p / f:.3f}x",
            "<= 1.5x",
            p / f <= 1.5,
        )
    ]
