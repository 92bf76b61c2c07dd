"""The data pipelines of a run, as data: how training images are oriented, coloured, scaled and cropped, and how
validation and detection see them; what the network saw (its ground resolution); the form stock MMDetection reads.

Transforms named ``Dumpsite*`` are this platform's (``engine.transforms``, registered by the child); all others are
MMDetection's own.
"""

from __future__ import annotations

import copy
from typing import Any

# The training pipeline's orientations (run parameter ``orientations``); tiles seen from above have no "up".
ORIENTATIONS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    # Half the images as they are, a quarter mirrored left-right, a quarter upside down.
    "flips": [{"type": "RandomFlip", "prob": [0.25, 0.25], "direction": ["horizontal", "vertical"]}],
    # All eight orientations of the square, equally likely: four flips (none, left-right, upside down, both) times
    # a transpose or not (engine.transforms); the quarter turns are among them. Boxes stay exact.
    "all": [
        {"type": "RandomFlip", "prob": [0.25, 0.25, 0.25], "direction": ["horizontal", "vertical", "diagonal"]},
        {"type": "DumpsiteTranspose", "prob": 0.5},
    ],
}
DEFAULT_ORIENTATIONS = "flips"  # what runs trained with before the parameter existed


# Resampling to a ground resolution never enlarges an image more than this (a 3 cm model on 12 cm imagery is
# enlarged 4x; beyond that the pixels hold nothing the model could use, and memory grows with the square).
MAX_UPSCALE = 4.0


def gsd_factor(gsd: float | None, target_gsd: float | None) -> float:
    """The scale that brings an image of ``gsd`` metres per pixel to ``target_gsd`` (1 when either is unknown)."""
    if not gsd or not target_gsd or gsd <= 0 or target_gsd <= 0:
        return 1.0
    return min(MAX_UPSCALE, gsd / target_gsd)


# Photometric jitter (run parameter ``colour``), with MMDetection's own transforms. Not PhotoMetricDistortion: it
# also swaps colour channels half the time, and green fields turned red teach nothing about waste from above.
COLOUR: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "jitter": [
        # hue by up to 5 of OpenCV's 180 steps, saturation and value (brightness) by up to 30 of 255
        {"type": "YOLOXHSVRandomAug", "hue_delta": 5, "saturation_delta": 30, "value_delta": 30},
        {"type": "Contrast", "prob": 0.5, "min_mag": 0.75, "max_mag": 1.25},
    ],
}
# A crop keeps a box it cuts only when this share of the box's area lies inside it (engine.transforms).
CROP_MIN_VISIBLE = 0.5

PIPELINE_DEFAULTS = {
    "orientations": DEFAULT_ORIENTATIONS,
    "colour": "none",
    "scale_jitter": 0.0,
    "resize": "whole",
    "crop_box_share": 0.75,
    "target_gsd": 0.0,
}


def pipelines(size: int, params: dict | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The training and test pipelines of ``params`` (``validate_params``'s; absent keys: the pipeline runs had
    before the parameter existed) at image size ``size``.

    resize ``whole``: each image is resized so that its longest side is ``size`` (MMDetection's ``Resize``); with
    scale jitter, a random factor around that, then a crop of ``size`` where the image came out larger.
    resize ``crops``: the one resize is ``DumpsiteRescale`` (to ``target_gsd``, times the jitter), then training
    takes ``DumpsiteBoxCrop`` crops of ``size``; validation and detection see whole images at that scale.
    """
    p = {**PIPELINE_DEFAULTS, **(params or {})}
    scale = [size, size]
    jitter = float(p["scale_jitter"])
    ratio = [round(1 - jitter, 4), round(1 + jitter, 4)]
    target = float(p["target_gsd"]) or None
    crop = {"type": "DumpsiteBoxCrop", "size": size, "box_share": p["crop_box_share"], "min_visible": CROP_MIN_VISIBLE}
    if p["resize"] == "crops":
        rescale: list[dict[str, Any]] = [
            {"type": "DumpsiteRescale", "target_gsd": target, "ratio_range": ratio if jitter else None},
            crop,
        ]
        test_rescale: dict[str, Any] = {"type": "DumpsiteRescale", "target_gsd": target}
    else:
        rescale = (
            [{"type": "RandomResize", "scale": scale, "ratio_range": ratio, "keep_ratio": True}, crop]
            if jitter
            else [{"type": "Resize", "scale": scale, "keep_ratio": True}]
        )
        test_rescale = {"type": "Resize", "scale": scale, "keep_ratio": True}
    train: list[dict[str, Any]] = [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations", "with_bbox": True},
        *rescale,
        # colour before orientation: OpenCV's colour conversions take no mirrored view of an image
        *copy.deepcopy(COLOUR[p["colour"]]),
        *copy.deepcopy(ORIENTATIONS[p["orientations"]]),
        {"type": "PackDetInputs"},
    ]
    test: list[dict[str, Any]] = [
        {"type": "LoadImageFromFile"},
        test_rescale,
        {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "PackDetInputs", "meta_keys": ["img_id", "img_path", "ori_shape", "img_shape", "scale_factor"]},
    ]
    return train, test


def trained_gsd(params: dict, resolution: dict | None) -> float | None:
    """The ground resolution (metres per pixel) a run's network saw, from its parameters and the ground resolution
    of its training split (``datasets.coco_export.ground_resolution_of``); None when no training image had one.

    target_gsd: that. Crops at full resolution: the images' median. Whole images: each was scaled so that its
    longest side is image_size, so the median ground length of that side over image_size."""
    if not resolution or not resolution.get("images"):
        return None
    p = {**PIPELINE_DEFAULTS, **params}
    if p["resize"] == "crops":
        return float(p["target_gsd"]) or resolution["median_m"]
    return round(resolution["longest_side_median_m"] / params["image_size"], 6)


def stock_config(cfg: dict) -> dict:
    """The config as stock MMDetection detects with (``init_detector``, ``DetInferencer``): the platform's
    resampling to a ground resolution, which needs each image's footprint, becomes a resize by 1 in the test and
    validation pipelines (the user resamples imagery to the model's ground resolution), and the platform's dataset
    type MMDetection's own. The training pipeline keeps the platform's transforms (retraining elsewhere needs
    ``custom_imports`` of ``engine.transforms``, docs/user-guide.md)."""
    out = copy.deepcopy(cfg)
    for split in ("train", "val", "test"):
        dataset = (out.get(f"{split}_dataloader") or {}).get("dataset")
        if not isinstance(dataset, dict):
            continue
        if dataset.get("type") == "DumpsiteCocoDataset":
            dataset["type"] = "CocoDataset"
        if split != "train":
            dataset["pipeline"] = [
                {"type": "Resize", "scale_factor": 1.0, "keep_ratio": True}
                if step.get("type") == "DumpsiteRescale"
                else step
                for step in dataset.get("pipeline") or []
            ]
    return out


def describe(params: dict) -> list[str]:
    """The training pipeline of ``params`` in words, one step per line, for the run's page, the API and
    ``train --dry-run``; the last line says how validation and detection see images."""
    p = {**PIPELINE_DEFAULTS, **params}
    size, jitter, target = params["image_size"], float(p["scale_jitter"]), float(p["target_gsd"])
    steps = []
    if p["resize"] == "crops":
        steps.append(
            f"resampled to {target * 100:g} cm per pixel from each image's footprint (images without one as they are)"
            if target
            else "kept at full resolution"
        )
        if jitter:
            steps.append(f"scaled by a random factor from {1 - jitter:g} to {1 + jitter:g}")
        steps.append(
            f"cropped to {size} x {size} px: {p['crop_box_share']:.0%} of the crops around a box chosen at random, "
            f"the rest anywhere; a box the crop cuts is kept when at least {CROP_MIN_VISIBLE:.0%} of it is inside, "
            "otherwise ignored"
        )
    else:
        steps.append(f"resized so that the longest side is {size} px")
        if jitter:
            steps.append(
                f"scaled by a random factor from {1 - jitter:g} to {1 + jitter:g}, then cropped to {size} x {size} px "
                f"where larger (a box cut to less than {CROP_MIN_VISIBLE:.0%} is ignored)"
            )
    if p["colour"] == "jitter":
        steps.append(
            "colours jittered: hue by up to 10 degrees, saturation and brightness by up to 12 %, contrast "
            "by up to 25 % half the time"
        )
    steps.append(
        {
            "none": "shown in one orientation (as stored)",
            "flips": "mirrored left-right or upside down, a quarter of the images each",
            "all": "shown in all eight orientations of the square (flips, quarter turns, diagonal mirrors), equally "
            "likely",
        }[p["orientations"]]
    )
    if p["resize"] == "crops":
        seen = f"at {target * 100:g} cm per pixel" if target else "at full resolution"
        steps.append(f"validation and detection: whole images {seen}, not augmented")
    else:
        steps.append(f"validation and detection: whole images resized so that the longest side is {size} px")
    return steps
