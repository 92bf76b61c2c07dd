"""Training suited to aerial imagery (`bash bench/run.sh aerial`): the aerial recipe against the preset's pipeline
before issue 31 (whole tiles; ``resize`` is now chosen by tile size, see ``bench.aerial_steps``), at the same
compute, on large tiles with small objects at mixed ground resolutions.

- **Data** (``bench.aerial_scenes``): tiles of 1,280 px, each its own patch of generated ground with waste piles of
  1 to 3.5 m among roads, roofs, trees, cars and bare soil patches. Training: most tiles at 5 cm per pixel, a
  quarter at 8 cm; validation (the newest tiles: the run's ``time`` split) at 10 cm. Piles are 10 to 70 px. Each
  tile has a footprint, so its ground resolution is known.
- **Runs** through the platform (a real worker cluster, RetinaNet R-18 tiny, the same epochs, batch and 512 px input
  per image: the same images seen, the same network input, so the same training compute):
  the default (whole tiles resized to 512 px, flips) and the aerial recipe (crops of 512 px at full resolution
  resampled to ``target_gsd``, all eight orientations, colour jitter, scale jitter).
- **Figures**: each registered model's mAP50 on the 10 cm validation tiles (COCO, the run's own validation); then a
  detection run of each model over a generated orthophoto at a fourth resolution (4 cm) with known sites, resampled
  to the model's ground resolution (the default), and its site recall at the score threshold 0.3.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np

from .aerial_scenes import SCENES_VERSION, Ground, jpeg
from .common import SCRATCH, Cluster, Figure, finished_run

TILE, IMAGE_SIZE, EPOCHS, BATCH = 1280, 512, 12, 4
TRAIN_TILES = [(0.05, 36), (0.08, 12)]  # (ground resolution, tiles)
VAL_TILES = (0.10, 10)
ORTHO_GSD, ORTHO_SIZE_M, ORTHO_SITES = 0.04, (160.0, 120.0), 30
COMMON = {"epochs": EPOCHS, "batch_size": BATCH, "image_size": IMAGE_SIZE, "split": "time", "seed": 0}
RECIPES: dict[str, dict] = {
    # The preset's pipeline before issue 31 (runs on these tiles now take crops when resize is not given).
    "default": {"resize": "whole"},
    "aerial": {
        "resize": "crops",
        "target_gsd": 0.06,
        "orientations": "all",
        "colour": "jitter",
        "scale_jitter": 0.2,
        "crop_box_share": 0.75,
    },
}
UTM33, X0, Y0 = 32633, 400_000.0, 5_200_000.0
DATASET = f"bench-aerial-v{SCENES_VERSION}"  # built again when the scenes change


def _footprint(x: float, y: float, w: float, h: float):
    from django.contrib.gis.geos import Polygon

    polygon = Polygon([(x, y), (x + w, y), (x + w, y - h), (x, y - h), (x, y)], srid=UTM33)
    polygon.transform(4326)
    return polygon


def bench_dataset():
    """The tiles, built once: training at 5 and 8 cm, validation (newest) at 10 cm; one class."""
    from datasets.models import Dataset
    from datasets.services import annotation_build, annotations_bulk_create, dataset_create, dataset_image_create

    found = Dataset.objects.filter(name=DATASET).first()
    if found is not None:
        return found
    dataset = dataset_create(name=DATASET, class_names=["waste_pile"])
    cls = dataset.classes.get()
    start = datetime(2026, 5, 1, tzinfo=UTC)
    index = 0
    for gsd, count in [*TRAIN_TILES, VAL_TILES]:
        for _ in range(count):
            side = TILE * gsd
            ground = Ground(seed=1000 + index, width_m=side, height_m=side, piles=int(3 + index % 4))
            pixels, boxes = ground.draw(gsd)
            x, y = X0 + (index % 10) * 300.0, Y0 - (index // 10) * 300.0
            image = dataset_image_create(
                dataset=dataset,
                content=jpeg(pixels),
                original_name=f"tile_{index:03d}_{round(gsd * 100)}cm.jpg",
                footprint=_footprint(x, y, side, side),
                captured_at=start + timedelta(days=index),
            )
            annotations_bulk_create(
                [
                    annotation_build(image=image, dataset_class=cls, x=x1, y=y1, width=x2 - x1, height=y2 - y1)
                    for x1, y1, x2, y2 in boxes
                ]
            )
            index += 1
    return dataset


def orthophoto_and_sites(dataset):
    """A GeoTIFF of generated ground at ORTHO_GSD with ORTHO_SITES piles, stored with the dataset, and the piles'
    outlines as known sites (GeoJSON in the orthophoto's CRS)."""
    from django.contrib.gis.gdal import GDALRaster

    from datasets.models import Orthophoto
    from datasets.orthophotos import orthophoto_store

    width_m, height_m = ORTHO_SIZE_M
    ground = Ground(seed=77, width_m=width_m, height_m=height_m, piles=ORTHO_SITES)
    x0, y0 = X0 + 5_000.0, Y0
    features = []
    for i, pile in enumerate(ground.piles):
        ring = [[x0 + pile.x + ox, y0 - pile.y - oy] for ox, oy in pile.outline]
        features.append(
            {
                "type": "Feature",
                "properties": {"id": f"site-{i}"},
                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
            }
        )
    crs = {"type": "name", "properties": {"name": "EPSG:32633"}}
    sites = json.dumps({"type": "FeatureCollection", "crs": crs, "features": features}).encode()
    name = f"area-{round(ORTHO_GSD * 100)}cm.tif"
    found = Orthophoto.objects.filter(dataset=dataset, name=name).first()
    if found is not None:
        return found, sites
    pixels, _ = ground.draw(ORTHO_GSD)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = SCRATCH / f"aerial-v{SCENES_VERSION}-{name}"
    raster = GDALRaster(
        {
            "driver": "GTiff",
            "name": str(path),
            "width": pixels.shape[1],
            "height": pixels.shape[0],
            "srid": UTM33,
            "origin": [x0, y0],
            "scale": [ORTHO_GSD, -ORTHO_GSD],
            "datatype": 1,
            "nr_of_bands": 3,
            "papsz_options": {"compress": "deflate", "tiled": "yes"},
        }
    )
    for band in range(3):
        raster.bands[band].data(np.ascontiguousarray(pixels[..., band]))
    del raster
    return orthophoto_store(dataset=dataset, source=path, name=name), sites


def trained(dataset, user, label: str, recipe: dict):
    """The model of one training run of ``recipe`` (over COMMON), through a real worker."""
    from training.services import training_run_create

    start = time.time()
    run = training_run_create(
        dataset=dataset,
        parameters={**COMMON, **recipe},
        name=f"bench aerial {label}",
        created_by=user,
    )
    wall, run = finished_run(run.pk, start, interval=2.0, what=f"{label} training")
    print(f"  {label}: trained in {wall:.0f} s", flush=True)
    return run.trained_model


def site_recall(model, ortho, sites: bytes, user) -> tuple[float, dict]:
    from detection.services import detection_run_create

    start = time.time()
    run = detection_run_create(
        model=model, orthophotos=[ortho], known_sites=sites, created_by=user, name=f"bench aerial {model.name}"
    )
    _, run = finished_run(run.pk, start, interval=1.0, what="detection run")
    figures = (run.export_summary or {}).get("sites") or {}
    return float(figures.get("recall") or 0.0), figures


def measured(recipes: dict[str, dict], dataset, user, log: str) -> tuple[dict, dict[str, float]]:
    """Each recipe trained in turn on one worker cluster, and its model's site recall over the orthophoto."""
    ortho, sites = orthophoto_and_sites(dataset)
    models, recalls = {}, {}
    with Cluster(log):
        for label, recipe in recipes.items():
            models[label] = trained(dataset, user, label, recipe)
            recalls[label], figures = site_recall(models[label], ortho, sites, user)
            print(
                f"  {label}: mAP50 {models[label].bbox_mAP_50:.3f}, trained at {models[label].gsd_m} m/px; "
                f"site recall {recalls[label]:.3f} ({figures.get('found')} of {figures.get('sites')})",
                flush=True,
            )
    return models, recalls


def bench_user():
    from django.contrib.auth.models import User

    return User.objects.filter(username="bench-root").first() or User.objects.create_superuser("bench-root")


def run() -> list[Figure]:
    user = bench_user()
    dataset = bench_dataset()
    models, recalls = measured(RECIPES, dataset, user, "aerial-qcluster.log")
    d, a = models["default"].bbox_mAP_50 or 0.0, models["aerial"].bbox_mAP_50 or 0.0
    rd, ra = recalls["default"], recalls["aerial"]
    return [
        Figure(
            "aerial",
            f"mAP50 on 10 cm validation tiles, aerial recipe / default before issue 31 ({EPOCHS} epochs, "
            f"batch {BATCH}, {IMAGE_SIZE} px input both)",
            f"{a:.3f} / {d:.3f} = {a - d:+.3f}",
            ">= +0.15",
            a - d >= 0.15,
        ),
        Figure(
            "aerial",
            f"site recall of a detection run over a {round(ORTHO_GSD * 100)} cm orthophoto ({ORTHO_SITES} sites), "
            "aerial / default model before issue 31",
            f"{ra:.3f} / {rd:.3f}",
            "higher",
            ra > rd,
        ),
    ]
