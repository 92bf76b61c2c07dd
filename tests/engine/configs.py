"""The generated MMDetection overrides of a run's parameters, with fixed paths, for tests that read them."""

from __future__ import annotations

from engine.config import build_overrides
from engine.presets import PRESETS


def generated_overrides(params: dict, *, preset: str = "retinanet_r18_tiny", classes=("waste",)) -> dict:
    return build_overrides(
        preset=PRESETS[preset],
        params=params,
        classes=list(classes),
        train_ann_file="/w/train.json",
        val_ann_file="/w/val.json",
        image_root="/media",
        work_dir="/w",
    )
