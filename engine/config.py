"""Build the MMDetection config of one run as data: a pinned base config plus an override dict.

Nothing here writes Python source. User text (class names, file paths) only ever sits inside dict values; the
child process merges the overrides into the base with mmengine's ``Config.merge_from_dict`` (the same merge as
``tools/train.py --cfg-options``) and stores the result as JSON.
"""

from __future__ import annotations

import copy
import json
import keyword
import math
import os
import re
from typing import Any

from .pipelines import pipelines
from .presets import Preset

METRIC_KEYS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")
BEST_METRIC = "coco/bbox_mAP"
# Pipeline transforms whose ``scale`` must be a tuple: mmcv's rescale_size rejects lists, and JSON has no tuples.
_SCALE_TRANSFORMS = {"Resize", "RandomResize", "FixShapeResize"}


def checkpoint_epoch(path: str | os.PathLike[str]) -> int:
    """The epoch of a checkpoint from mmengine's names (``epoch_3.pth``, ``best_coco_bbox_mAP_epoch_3.pth``); 0 for
    any other name."""
    match = re.search(r"epoch_(\d+)\.pth$", str(path))
    return int(match.group(1)) if match else 0


def set_path(target: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def merge_into(target: dict, extra: dict) -> None:
    """``extra``'s keys into ``target``, dicts merged key by key (as mmengine merges a config into its base)."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


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
    wrapper = {
        "_delete_": True,
        "type": "OptimWrapper",
        "optimizer": optimizer,
        "clip_grad": {"max_norm": 35, "norm_type": 2},
    }
    if params.get("accumulate", 1) > 1:
        wrapper["accumulative_counts"] = params["accumulate"]
    if params.get("amp"):
        # float16 autocast with dynamic loss scaling (mmengine's AmpOptimWrapper); the child refuses it on a CPU.
        wrapper.update(type="AmpOptimWrapper", loss_scale="dynamic")
    return wrapper


def _custom_hooks(params: dict) -> list[dict]:
    if not params.get("patience"):
        return []
    # mmengine's own hook: it stops the train loop after ``patience`` validations without a better mAP. Its default
    # min_delta of 0.1 would be a tenth of the whole mAP range, and 0 would count an unchanged mAP as a gain (it
    # compares best + min_delta > current); COCO reports mAP to 3 decimals, so half a unit is the smallest gain.
    return [
        {
            "type": "EarlyStoppingHook",
            "monitor": BEST_METRIC,
            "rule": "greater",
            "min_delta": 0.0005,
            "patience": params["patience"],
        }
    ]


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
    num_workers: int | None = None,
) -> dict:
    """The override dict for ``preset``'s base config. ``params`` must come from ``validate_params``."""
    if num_workers is None:
        num_workers = params.get("data_workers", 0)
    train_pipeline, test_pipeline = pipelines(params["image_size"], params)
    metainfo = {"classes": list(classes)}

    def dataset(ann_file: str, pipeline: list[dict], test_mode: bool) -> dict:
        ds: dict[str, Any] = {
            "_delete_": True,
            # the platform's dataset keeps each image's ground resolution, for resampling to target_gsd
            "type": "DumpsiteCocoDataset" if params.get("target_gsd") else "CocoDataset",
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
    anchor_scale = params.get("anchor_scale", 1.0)  # runs stored before the parameter trained at 1
    if anchor_scale != 1.0 and preset.anchors is not None:
        merge_into(model, preset.anchors.overrides(anchor_scale))
    for path in preset.num_classes_paths:
        set_path(model, path, len(classes))
    evaluator = {
        "_delete_": True,
        "type": "CocoMetric",
        "ann_file": val_ann_file,
        "metric": "bbox",
        "format_only": False,
        "backend_args": None,
        # The ranks' results are gathered through the process group (all_gather_object: gloo on CPUs, NCCL on
        # GPUs); mmengine's "cpu" mode writes them to a folder every rank must see, which hosts do not share.
        "collect_device": "gpu",
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
        "custom_hooks": _custom_hooks(params),
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


# Characters a string literal of the Python config may hold as they are. Everything else is written as an escape,
# so user text can close no quote, start no line, open no ``{{`` template and name no ``$`` variable.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,:;/()[]<>=+*&^%#@!?|~")
_KEYWORDS = frozenset(keyword.kwlist)  # soft keywords (type, match) are fine as dict(type=...)


def _py_string(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _PLAIN:
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "'" + "".join(out) + "'"


def _is_name(key: object) -> bool:
    return isinstance(key, str) and key.isidentifier() and key.isascii() and key not in _KEYWORDS


def _py_literal(value: Any, indent: int) -> str:
    pad, inner = " " * indent, " " * (indent + 4)
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"float({_py_string(repr(value))})"
    if isinstance(value, str):
        return _py_string(value)
    if isinstance(value, dict):
        if not value:
            return "dict()"
        if all(_is_name(k) for k in value):
            items = [f"{inner}{k}={_py_literal(v, indent + 4)}," for k, v in value.items()]
            return "dict(\n" + "\n".join(items) + f"\n{pad})"
        items = [f"{inner}{_py_literal(str(k), 0)}: {_py_literal(v, indent + 4)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, (list, tuple)):
        opening, closing = ("(", ")") if isinstance(value, tuple) else ("[", "]")
        if not value:
            return "()" if isinstance(value, tuple) else "[]"
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            inline = ", ".join(_py_literal(v, 0) for v in value)
            if len(inline) <= 100:  # short lists of numbers or names stay on one line, as people write them
                return opening + inline + ("," if len(value) == 1 and closing == ")" else "") + closing
        items = [f"{inner}{_py_literal(v, indent + 4)}," for v in value]
        return opening + "\n" + "\n".join(items) + f"\n{pad}{closing}"
    raise TypeError(f"a config holds plain data only, not {type(value).__name__}")


def dumps_config_py(cfg: dict, *, header: str = "") -> str:
    """The config as a Python file that stock MMDetection reads (``init_detector``, ``DetInferencer``,
    ``tools/test.py``): the form its tools expect, with tuples where MMDetection needs them.

    Built from data, never from text: every value is written as a literal, and every string character other than
    letters, digits, space and harmless punctuation as an escape. A class name therefore stays one inert string
    literal whatever it holds (quotes, newlines, code, ``{{ }}`` templates, ``$`` variables), and the file's text
    holds nothing mmengine's ``Config.fromfile`` would substitute.
    """
    data = restore_tuples(copy.deepcopy(cfg))
    lines = [f"# {line}" for line in header.splitlines()]
    for key, value in data.items():
        if not _is_name(key) or key.startswith("__"):
            raise ValueError(f"a config's top-level key must be a plain name, got {key!r}")
        lines.append(f"{key} = {_py_literal(value, 0)}")
    return "\n".join(lines) + "\n"


def set_classes(cfg: dict, classes: list[str]) -> dict:
    """Put the class names in every dataset's ``metainfo`` of a config (in place; for registered base models)."""
    for split in ("train", "val", "test"):
        dataset = (cfg.get(f"{split}_dataloader") or {}).get("dataset")
        if isinstance(dataset, dict):
            dataset["metainfo"] = {**(dataset.get("metainfo") or {}), "classes": list(classes)}
    return cfg
