"""Hyper-parameters of a training run: their types, valid ranges and defaults. Plain data, no Django."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .presets import get_preset


@dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: type  # int, float, str or bool
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    help: str = ""

    def describe(self) -> str:
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.kind is bool:
            return "true or false"
        if self.kind is int:
            return f"int from {int(self.minimum or 0)} to {int(self.maximum or 0)}"
        return f"{self.kind.__name__} from {self.minimum:g} to {self.maximum:g}"


PARAM_SPECS: dict[str, ParamSpec] = {
    s.name: s
    for s in (
        ParamSpec("epochs", int, 1, 500, help="Passes over the training split."),
        ParamSpec("batch_size", int, 1, 128, help="Images per iteration."),
        ParamSpec("learning_rate", float, 1e-7, 1.0, help="Base learning rate of the optimizer."),
        ParamSpec("optimizer", str, choices=("AdamW", "SGD"), help="Optimizer."),
        ParamSpec("weight_decay", float, 0.0, 1.0, help="Weight decay."),
        ParamSpec("frozen_stages", int, -1, 4, help="Backbone stages kept frozen (-1: none)."),
        ParamSpec("image_size", int, 64, 4096, help="Longest side images are resized to (a multiple of 32)."),
        ParamSpec("val_fraction", float, 0.05, 0.5, help="Share of images held out for validation."),
        ParamSpec(
            "split",
            str,
            choices=("random", "spatial", "time"),
            help=(
                "How images are split: random (seeded); spatial (whole blocks of grid cells over the footprints go to "
                "one side); time (the newest images validate). Images without a place or time are split at random."
            ),
        ),
        ParamSpec("split_cell_m", float, 1.0, 100000.0, help="Cell size in metres of the spatial split's grid."),
        ParamSpec(
            "score_threshold",
            float,
            0.0,
            1.0,
            help="Score from which a detection counts in precision, recall, the confusion matrix and the gallery.",
        ),
        ParamSpec(
            "iou_threshold",
            float,
            0.05,
            0.95,
            help="Overlap (IoU) from which a detection matches a box in the confusion matrix and the gallery.",
        ),
        ParamSpec(
            "orientations",
            str,
            choices=("none", "flips", "all"),
            help=(
                "Orientations the training images are shown in: none; flips (left-right or upside down, a quarter "
                "of the images each); all (the eight orientations of the square, flips, quarter turns and diagonal "
                "mirrors, equally likely). Boxes stay exact. Default: all with resize crops, flips otherwise."
            ),
        ),
        ParamSpec(
            "colour",
            str,
            choices=("none", "jitter"),
            help=(
                "Photometric jitter of the training images: none; jitter (hue, saturation and brightness in HSV, and "
                "contrast, each a little at random), for light, season and camera differences. Default: jitter with "
                "resize crops, none otherwise."
            ),
        ),
        ParamSpec(
            "scale_jitter",
            float,
            0.0,
            0.5,
            help=(
                "Random resized crops: each training image is scaled by a random factor within 1 - x and 1 + x "
                "before the crop (0: off). Default: 0.2 with resize crops, 0 otherwise."
            ),
        ),
        ParamSpec(
            "resize",
            str,
            choices=("whole", "crops"),
            help=(
                "How images meet the network: whole (each image shrunk or enlarged so its longest side is "
                "image_size); crops (images at full resolution, or resampled to target_gsd: training on crops of "
                "image_size px around boxes, validation and detection on whole images). Crops keep small objects "
                "small-but-visible on large tiles. Not given: crops when the dataset's images are larger than "
                "image_size (their median longer side) or target_gsd is set, whole otherwise."
            ),
        ),
        ParamSpec(
            "crop_box_share",
            float,
            0.0,
            1.0,
            help="With resize crops: share of training crops placed around a box; the rest fall anywhere (background).",
        ),
        ParamSpec(
            "target_gsd",
            float,
            0.0,
            10.0,
            help=(
                "Ground resolution in metres per pixel every image is resampled to, from its footprint (0: off; "
                "needs resize crops). Images without a footprint are used as they are."
            ),
        ),
        ParamSpec(
            "anchor_scale",
            float,
            0.25,
            2.0,
            help=(
                "The preset's anchors times this (1: as the preset has them); a dry run suggests the scale that "
                "lets the most of a dataset's boxes match an anchor. Presets without anchors take only 1."
            ),
        ),
        ParamSpec("seed", int, 0, 2**31 - 1, help="Seed of the split, the augmentation and the initial weights."),
        ParamSpec("warmup_iters", int, 0, 10000, help="Iterations of linear learning-rate warm-up."),
        ParamSpec("amp", bool, help="Mixed precision (float16 autocast with loss scaling); needs a GPU."),
        ParamSpec("data_workers", int, 0, 32, help="Data-loader worker processes per training process (0: none)."),
        ParamSpec(
            "processes",
            int,
            1,
            64,
            help=(
                "Training processes of the run (torch.distributed, one per GPU on a GPU worker); the batch size is "
                "per process, so each iteration sees batch_size x processes images."
            ),
        ),
        ParamSpec(
            "nodes",
            int,
            1,
            16,
            help=(
                "Hosts the run trains on together, each with `processes` training processes (their workers take it "
                "together or not at all); each iteration sees batch_size x processes x nodes images."
            ),
        ),
        ParamSpec(
            "device",
            str,
            choices=("cpu", "gpu"),
            help="What the run trains on: CPU slots or GPUs of a worker (default: the site's DUMPSITE_GPU_WORKERS).",
        ),
        ParamSpec(
            "accumulate",
            int,
            1,
            64,
            help="Gradient accumulation: iterations whose gradients are summed before each optimizer step.",
        ),
        ParamSpec(
            "patience",
            int,
            0,
            500,
            help="Early stopping: end the run after this many epochs without a better validation mAP (0: off).",
        ),
    )
}

# Defaults of the parameters every preset shares (a preset may override them).
COMMON_DEFAULTS = {
    "amp": False,
    "data_workers": 0,
    "processes": 1,
    "nodes": 1,
    "device": "cpu",
    "accumulate": 1,
    "patience": 0,
    "orientations": "flips",
    "colour": "none",
    "scale_jitter": 0.0,
    "resize": "whole",
    "crop_box_share": 0.75,
    "target_gsd": 0.0,
    "anchor_scale": 1.0,
    "split": "random",
    "split_cell_m": 250.0,
    "score_threshold": 0.3,
    "iou_threshold": 0.5,
}


# With resize crops, the augmentation defaults are the aerial recipe's: on crops (at one ground resolution) all eight
# orientations, colour and scale jitter gave +0.144 mAP50 (0.626 against 0.482); on whole tiles shrunk to the input,
# orientations and colour cost 0.173 (0.122 against 0.295), so whole keeps the flips (bench/aerial_steps.py).
CROPS_DEFAULTS = {"orientations": "all", "colour": "jitter", "scale_jitter": 0.2}

MIN_TARGET_GSD = 0.005  # 5 mm per pixel: finer than any drone flight this platform is meant for


class ParamError(ValueError):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def checked_value(spec: ParamSpec, value: Any) -> Any:
    """``value`` as the parameter's kind, within its range; ValueError saying what is wrong otherwise."""
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be {spec.describe()}")
        return value
    if spec.kind is str:
        if not isinstance(value, str) or value not in (spec.choices or ()):
            raise ValueError(f"must be {spec.describe()}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number ({spec.describe()}), got {type(value).__name__}")
    if spec.kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"must be a whole number ({spec.describe()})")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"must be finite ({spec.describe()})")
    if not spec.minimum <= value <= spec.maximum:
        raise ValueError(f"{value!r} is out of range ({spec.describe()})")
    return value


def checked_values(specs: dict[str, ParamSpec], given: dict) -> tuple[dict, dict[str, str]]:
    """The values ``given`` for ``specs`` (those not None), each checked, and an error for each bad one."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, spec in specs.items():
        if given.get(key) is None:
            continue
        try:
            values[key] = checked_value(spec, given[key])
        except ValueError as exc:
            errors[key] = str(exc)
    return values, errors


def validate_params(architecture: str, given: dict | None) -> dict:
    """Return the complete parameter dict (preset defaults + ``given``), or raise ParamError naming each problem."""
    preset = get_preset(architecture)
    given = dict(given or {})
    errors: dict[str, str] = {
        key: f"unknown parameter; known: {', '.join(PARAM_SPECS)}" for key in given if key not in PARAM_SPECS
    }
    values, bad = checked_values(PARAM_SPECS, given)
    defaults = {**COMMON_DEFAULTS, **preset.defaults}
    if values.get("resize", defaults["resize"]) == "crops":
        defaults.update(CROPS_DEFAULTS)
    params = {**defaults, **values}
    errors.update(bad)
    if "image_size" not in errors and params["image_size"] % 32:
        errors["image_size"] = f"{params['image_size']} is not a multiple of 32"
    if "target_gsd" not in errors and 0 < params["target_gsd"] < MIN_TARGET_GSD:
        errors["target_gsd"] = f"0 (off) or at least {MIN_TARGET_GSD} m per pixel"
    elif "target_gsd" not in errors and params["target_gsd"] and params["resize"] != "crops":
        errors["target_gsd"] = (
            "needs resize 'crops': with resize 'whole' every image is scaled to image_size whatever its resolution"
        )
    if "anchor_scale" not in errors and params["anchor_scale"] != 1.0 and preset.anchors is None:
        errors["anchor_scale"] = f"preset {preset.key} has no anchors to scale: leave it at 1"
    if errors:
        raise ParamError(errors)
    return params


def total_batch_size(params: dict) -> int:
    """Images per iteration over all processes of all hosts (the batch size is per process)."""
    return int(params.get("batch_size") or 0) * int(params.get("processes") or 1) * int(params.get("nodes") or 1)
