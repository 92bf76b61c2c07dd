"""Evaluation inside the child process: a registered model's checkpoint run over an annotated COCO document with
mmengine's own test loop (what MMDetection's ``tools/test.py`` does), then ``analysis.analyse`` on what it found.

Two callers: the training child evaluates its best checkpoint on the run's validation split once training ends,
and an evaluation run (``EvaluationJob``) evaluates any registered model on any COCO document the worker wrote.
Both leave ``evaluation.json`` (``analyse``'s result) for the worker to store.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from .job import JsonJob
from .loading import load_json_config, write_json

DETECTIONS_PREFIX = "detections"


@dataclass(frozen=True)
class EvaluationJob(JsonJob):
    config_file: str  # the model's stored config (JSON)
    checkpoint: str
    classes: list[str]
    gt_file: str  # COCO document: categories 1..N in the model's class order
    image_root: str
    work_dir: str
    events_file: str
    result_file: str  # evaluation.json
    score_threshold: float = 0.3
    iou_threshold: float = 0.5
    batch_size: int = 1
    kind: str = "evaluate"


def test_dataset_overrides(cfg: Any, *, gt_file: str, image_root: str, classes: list[str], batch_size: int) -> None:
    """Point a stored config's test loader and evaluator at ``gt_file`` (in place); the model's own test
    pipeline stays as it was trained."""
    source = cfg.get("test_dataloader") or cfg.get("val_dataloader")
    loader = copy.deepcopy(source)
    dataset = loader["dataset"]
    dataset.update(
        ann_file=gt_file,
        data_root=image_root,
        data_prefix={"img": ""},
        metainfo={"classes": list(classes)},
        test_mode=True,
    )
    dataset.pop("filter_cfg", None)
    loader.update(batch_size=batch_size, num_workers=0, persistent_workers=False)
    cfg.test_dataloader = loader
    cfg.test_evaluator = {"type": "CocoMetric", "ann_file": gt_file, "metric": "bbox", "format_only": False}
    cfg.test_cfg = {"type": "TestLoop"}


def analyse_detections(gt_file: str, detections_file: str, *, score_threshold: float, iou_threshold: float) -> dict:
    # torch / MMDetection load only where this runs (a child process), never on import
    from .analysis import analyse

    with open(gt_file, encoding="utf-8") as fh:
        gt_doc = json.load(fh)
    detections = []
    if os.path.isfile(detections_file):
        with open(detections_file, encoding="utf-8") as fh:
            detections = json.load(fh)
    return analyse(gt_doc, detections, score_threshold=score_threshold, iou_threshold=iou_threshold)


def detections_file(work_dir: str) -> str:
    return os.path.join(work_dir, f"{DETECTIONS_PREFIX}.bbox.json")


def evaluate(job: EvaluationJob) -> dict:
    """Run the model over the document with mmengine's test loop and analyse what it found."""
    # torch / MMDetection load only where this runs (a child process), never on import
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    # torch / MMDetection load only where this runs (a child process), never on import
    from .checkpoints import install_safe_globals
    from .progress_hook import ProgressEventsHook

    started = time.monotonic()
    install_safe_globals()
    register_all_modules(init_default_scope=True)
    os.makedirs(job.work_dir, exist_ok=True)
    cfg = load_json_config(job.config_file)
    test_dataset_overrides(
        cfg, gt_file=job.gt_file, image_root=job.image_root, classes=job.classes, batch_size=job.batch_size
    )
    # CocoMetric only writes the detections (format_only): the one COCO evaluation is analyse()'s.
    cfg.test_evaluator.update(outfile_prefix=os.path.join(job.work_dir, DETECTIONS_PREFIX), format_only=True)
    cfg.load_from = job.checkpoint
    cfg.resume = False
    cfg.custom_hooks = []  # training's (early stopping) have nothing to do in a test
    cfg.work_dir = job.work_dir
    runner = Runner.from_cfg(cfg)
    runner.register_hook(ProgressEventsHook(job.events_file, test_progress=True))
    runner.test()
    result = analyse_detections(
        job.gt_file,
        detections_file(job.work_dir),
        score_threshold=job.score_threshold,
        iou_threshold=job.iou_threshold,
    )
    result["seconds"] = round(time.monotonic() - started, 3)
    write_json(job.result_file, result)
    return result
