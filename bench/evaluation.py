"""Evaluation runs against tools/test.py, and random against spatial splits on the demo tiles.

Evaluation: (a) the platform, from the API call to stored per-class results (a real django-q2 cluster, the
evaluation child under its supervisor, analysis, storage of every image's outcome), against (b) MMDetection's own
``tools/test.py`` on the same config, checkpoint and COCO document. The cluster runs only during (a).

Splits: the same training on the demo tiles with a random and a spatial split, their validation mAP50 side by side.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from django.conf import settings
from django.test import Client

from .common import SCRATCH, Cluster, Figure, finished_run, median, run_tool

PAIRS = 5
EVAL_IMAGES = 300  # a held-out area's worth of tiles: the evaluation takes about half a minute here


def _model(client: Client, dataset):
    """A model trained here on the bench demo tiles (once; later runs reuse it)."""
    from models_registry.models import TrainedModel

    from .training import _platform_run

    model = TrainedModel.objects.filter(dataset=dataset, origin="trained").order_by("-id").first()
    if model is None:
        print("  training a model to evaluate ...", flush=True)
        with Cluster("qcluster-evaluation.log"):
            _, run = _platform_run(client, dataset.pk)
        model = run.trained_model
    return model


def _tools_test() -> Path:
    import mmdet

    path = Path(mmdet.__file__).parent / ".mim" / "tools" / "test.py"
    if not path.is_file():
        raise RuntimeError(f"mmdet's tools/test.py is not installed at {path}")
    return path


def _held_out():
    """Demo tiles of another seed (a held-out area), the dataset the model is evaluated on."""
    from datasets.demo import demo_dataset_create
    from datasets.models import Dataset

    name = "bench-held-out"
    return Dataset.objects.filter(name=name).first() or demo_dataset_create(name=name, images=EVAL_IMAGES, seed=5)


def _baseline_files(model, dataset, out: Path) -> Path:
    """The document the platform evaluates on (every image, the model's classes) and the model's stored config
    pointed at it, as the ``.py`` file ``tools/test.py`` reads."""
    from mmengine.config import Config

    from datasets.coco_export import build_coco, merge_documents, remap_classes
    from engine.config import dumps_config_py, restore_tuples
    from engine.evaluate import test_dataset_overrides

    train, val = build_coco(dataset, val_fraction=0.2, seed=0)
    doc, _ = remap_classes(merge_documents(train, val), list(model.class_names))
    gt = out / "gt.json"
    gt.write_text(json.dumps(doc), encoding="utf-8")
    cfg = Config(restore_tuples(json.loads(Path(model.config.path).read_text(encoding="utf-8"))))
    test_dataset_overrides(
        cfg, gt_file=str(gt), image_root=str(settings.MEDIA_ROOT), classes=list(model.class_names), batch_size=1
    )
    path = out / "baseline_test.py"
    path.write_text(dumps_config_py(cfg.to_dict()), encoding="utf-8")
    return path


def _baseline_run(config: Path, checkpoint: str, work: Path) -> float:
    return run_tool([str(_tools_test()), str(config), checkpoint, "--work-dir", str(work)], work, "tools/test.py")


def _platform_run(client: Client, model, dataset) -> tuple[float, object]:
    start = time.time()
    response = client.post(
        "/api/training-runs/evaluate/",
        {"model": model.pk, "dataset": dataset.pk, "split": "all", "parameters": {"batch_size": 1}},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    return finished_run(run_id, start, interval=1.0, what="evaluation")


def _split_comparison(client: Client, dataset) -> Figure:
    """The same training on the demo tiles with a random and a spatial split: what each says about the model."""
    from training.models import TrainingRun

    results = {}
    with Cluster("qcluster-evaluation.log"):
        for strategy in ("random", "spatial"):
            response = client.post(
                "/api/training-runs/",
                {"dataset": dataset.pk, "parameters": {"epochs": 3, "split": strategy, "split_cell_m": 250}},
                content_type="application/json",
            )
            assert response.status_code == 201, response.content
            run_id = response.json()["id"]
            while TrainingRun.objects.filter(pk=run_id, status__in=("queued", "running")).exists():
                time.sleep(1.0)
            run = TrainingRun.objects.select_related("trained_model").get(pk=run_id)
            if run.status != "succeeded":
                raise RuntimeError(f"split run {run_id} ended {run.status}: {run.error_message}")
            results[strategy] = (run.trained_model.bbox_mAP_50, run.export_summary.get("split", {}))
    (random_map, _), (spatial_map, spatial) = results["random"], results["spatial"]
    return Figure(
        "splits",
        f"demo tiles, 3 epochs: validation mAP50 random split / spatial split ({spatial.get('cells')} cells of "
        f"250 m, {spatial.get('val_cells')} validating, {spatial.get('edge_images')} tiles across cell edges)",
        f"{random_map:.3f} / {spatial_map:.3f}",
        "informative",
        None,
    )


def run() -> list[Figure]:
    from .training import trainer_session

    _user, dataset, client = trainer_session()
    model = _model(client, dataset)
    out = SCRATCH / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    held_out = _held_out()
    config = _baseline_files(model, held_out, out)

    platform, baseline = [], []
    for i in range(PAIRS):
        print(f"  evaluation pair {i + 1}/{PAIRS} ...", flush=True)
        baseline.append(_baseline_run(config, model.checkpoint.path, out / "baseline"))
        with Cluster("qcluster-evaluation.log"):
            wall, run = _platform_run(client, model, held_out)
        platform.append(wall)
        print(f"    tools/test.py {baseline[-1]:.2f} s, platform {wall:.2f} s", flush=True)
    shutil.rmtree(out / "baseline", ignore_errors=True)
    p, b = median(platform), median(baseline)
    figures = [
        Figure(
            "evaluation",
            f"platform (API -> stored per-class results, {held_out.images.count()} images) / tools/test.py, median",
            f"{p:.1f} s / {b:.1f} s = {p / b:.3f}x",
            "<= 1.05x",
            p / b <= 1.05,
        )
    ]

    print("  random against spatial split on the demo tiles ...", flush=True)
    figures.append(_split_comparison(client, dataset))
    return figures
