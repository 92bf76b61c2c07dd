"""Build the MMDetection config of one run as data: a pinned base config plus an override dict.

Nothing here writes Python source. User text (class names, file paths) only ever sits inside dict values; the
child process merges the overrides into the base with mmengine's ``Config.merge_from_dict`` (the same merge as
``tools/train.py --cfg-options``) and stores the result as JSON.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from .presets import Preset

METRIC_KEYS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")
BEST_METRIC = "coco/bbox_mAP"
# Pipeline transforms whose ``scale`` must be a tuple: mmcv's rescale_size rejects lists, and JSON has no tuples.
_SCALE_TRANSFORMS = {"Resize", "RandomResize", "FixShapeResize"}


def checkpoint_epoch(path) -> int:
    """The epoch of a checkpoint from mmengine's names (``epoch_3.pth``, ``best_coco_bbox_mAP_epoch_3.pth``); 0 for
    any other name."""
    match = re.search(r"epoch_(\d+)\.pth$", str(path))
    return int(match.group(1)) if match else 0


def _set_path(target: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def _pipelines(size: int) -> tuple[list[dict], list[dict]]:
    scale = [size, size]
    train = [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "Resize", "scale": scale, "keep_ratio": True},
        # Aerial tiles have no "up": flip both ways.
        {"type": "RandomFlip", "prob": [0.25, 0.25], "direction": ["horizontal", "vertical"]},
        {"type": "PackDetInputs"},
    ]
    test = [
        {"type": "LoadImageFromFile"},
        {"type": "Resize", "scale": scale, "keep_ratio": True},
        {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "PackDetInputs", "meta_keys": ["img_id", "img_path", "ori_shape", "img_shape", "scale_factor"]},
    ]
    return train, test


def _schedule(params: dict) -> list[dict]:
    epochs = params["epochs"]
    schedulers = []
    if params["warmup_iters"] > 0:
        schedulers.append(
            {"type": "LinearLR", "start_factor": 0.1, "by_epoch": False, "begin": 0, "end": params["warmup_iters"]}
        )
    if epochs >= 3:
        schedulers.append(
            {
                "type": "MultiStepLR",
                "by_epoch": True,
                "begin": 0,
                "end": epochs,
                "milestones": [max(1, round(epochs * 0.8))],
                "gamma": 0.1,
            }
        )
    return schedulers


def _optimizer(params: dict) -> dict:
    if params["optimizer"] == "SGD":
        optimizer = {
            "type": "SGD",
            "lr": params["learning_rate"],
            "momentum": 0.9,
            "weight_decay": params["weight_decay"],
        }
    else:
        optimizer = {
            "type": "AdamW",
            "lr": params["learning_rate"],
            "betas": [0.9, 0.999],
            "weight_decay": params["weight_decay"],
        }
    return {
        "_delete_": True,
        "type": "OptimWrapper",
        "optimizer": optimizer,
        "clip_grad": {"max_norm": 35, "norm_type": 2},
    }


def build_overrides(
    *,
    preset: Preset,
    params: dict,
    classes: list[str],
    train_ann_file: str,
    val_ann_file: str,
    image_root: str,
    work_dir: str,
    load_from: str | None = None,
    resume_from: str | None = None,
    num_workers: int = 0,
) -> dict:
    """The override dict for ``preset``'s base config. ``params`` must come from ``validate_params``."""
    train_pipeline, test_pipeline = _pipelines(params["image_size"])
    metainfo = {"classes": list(classes)}

    def dataset(ann_file: str, pipeline: list[dict], test_mode: bool) -> dict:
        ds = {
            "_delete_": True,
            "type": "CocoDataset",
            "data_root": image_root,
            "ann_file": ann_file,
            "data_prefix": {"img": ""},
            "metainfo": metainfo,
            "pipeline": pipeline,
            "test_mode": test_mode,
            "backend_args": None,
        }
        if not test_mode:
            ds["filter_cfg"] = {"filter_empty_gt": True, "min_size": 2}
        return ds

    def loader(ann_file: str, pipeline: list[dict], test_mode: bool, batch_size: int) -> dict:
        return {
            "batch_size": batch_size,
            "num_workers": num_workers,
            "persistent_workers": num_workers > 0,
            "dataset": dataset(ann_file, pipeline, test_mode),
        }

    model = copy.deepcopy(preset.model_overrides)  # the preset's own dict stays as it is
    model.setdefault("backbone", {})["frozen_stages"] = params["frozen_stages"]
    for path in preset.num_classes_paths:
        _set_path(model, path, len(classes))
    evaluator = {
        "_delete_": True,
        "type": "CocoMetric",
        "ann_file": val_ann_file,
        "metric": "bbox",
        "format_only": False,
        "backend_args": None,
    }
    val_loader = loader(val_ann_file, test_pipeline, True, params["batch_size"])
    return {
        "model": model,
        "train_dataloader": loader(train_ann_file, train_pipeline, False, params["batch_size"]),
        "val_dataloader": val_loader,
        "test_dataloader": copy.deepcopy(val_loader),
        "val_evaluator": evaluator,
        "test_evaluator": copy.deepcopy(evaluator),
        "train_cfg": {
            "_delete_": True,
            "type": "EpochBasedTrainLoop",
            "max_epochs": params["epochs"],
            "val_interval": 1,
        },
        "optim_wrapper": _optimizer(params),
        "param_scheduler": _schedule(params),
        "auto_scale_lr": {"enable": False},
        "default_hooks": {
            # Only the best and the last checkpoints are kept during training.
            "checkpoint": {
                "type": "CheckpointHook",
                "interval": 1,
                "max_keep_ckpts": 1,
                "save_last": True,
                "save_best": BEST_METRIC,
                "rule": "greater",
            },
            "logger": {"type": "LoggerHook", "interval": 10},
        },
        "randomness": {"seed": params["seed"], "deterministic": False},
        "work_dir": work_dir,
        # Resuming restores weights, optimizer, schedule and epoch from a full checkpoint of an earlier attempt.
        "load_from": resume_from or load_from,
        "resume": bool(resume_from),
    }


def restore_tuples(node: Any) -> Any:
    """Turn the ``scale`` of resize transforms back into tuples after a trip through JSON (in place)."""
    if isinstance(node, dict):
        if node.get("type") in _SCALE_TRANSFORMS and isinstance(node.get("scale"), list):
            scale = node["scale"]
            node["scale"] = [tuple(s) for s in scale] if scale and isinstance(scale[0], list) else tuple(scale)
        for value in node.values():
            restore_tuples(value)
    elif isinstance(node, list):
        for value in node:
            restore_tuples(value)
    return node


def publishable_config(cfg: dict) -> dict:
    """The config as it is stored with a registered model: what was trained, without this server's file system.

    Absolute paths (the work dir, the exported annotation files, the image root, the base model's checkpoint in
    storage) are replaced by the relative layout a user recreates on their side (``data/annotations/*.json``):
    a model handed to another team tells nothing about where this server keeps its files.
    """
    out = copy.deepcopy(cfg)
    out["work_dir"] = "work_dirs/model"
    out["load_from"] = None
    out["resume"] = False
    for split, name in (("train", "train.json"), ("val", "val.json"), ("test", "val.json")):
        dataset = (out.get(f"{split}_dataloader") or {}).get("dataset")
        if isinstance(dataset, dict):
            dataset["data_root"] = "data/"
            dataset["ann_file"] = f"annotations/{name}"
        evaluator = out.get(f"{split}_evaluator")
        if isinstance(evaluator, dict) and "ann_file" in evaluator:
            evaluator["ann_file"] = f"data/annotations/{name}"
    return out


def dumps_config_json(cfg: dict) -> str:
    """JSON text of a config that mmengine's ``Config.fromfile`` reads back literally.

    ``fromfile`` rewrites ``{{ ... }}`` patterns in a file's raw text before parsing it; a class name may hold
    one. JSON never has ``{{`` outside a string (an object key is always a string), so escaping the second brace
    of every ``{{`` as ``\\u007b`` changes nothing for a JSON parser and leaves no pattern in the text.
    """
    return json.dumps(cfg, ensure_ascii=False, indent=1).replace("{{", "{\\u007b")
