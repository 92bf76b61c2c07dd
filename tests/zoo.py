"""Model-zoo checkpoints built locally: nothing may be downloaded here, so a test instantiates the preset's model
(random weights) and saves it in the layout the MMDetection model zoo publishes."""

from __future__ import annotations

from pathlib import Path

COCO_LAYOUTS = ("2.x", "3.x", "bare")


def build_model(architecture: str, num_classes: int, seed: int = 0):
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict

    from engine.inspect import preset_config

    register_all_modules(init_default_scope=True)
    torch.manual_seed(seed)
    model = MODELS.build(ConfigDict(preset_config(architecture, num_classes)["model"]))
    model.init_weights()
    return model


def make_zoo_checkpoint(
    path: Path, architecture: str, *, num_classes: int = 80, layout: str = "2.x", state: dict | None = None
) -> Path:
    """Save a checkpoint as the zoo has them. ``2.x``: ``meta`` with ``CLASSES`` (a tuple), epoch, iter and
    mmdet_version (the Faster R-CNN R-50 FPN 1x COCO file); ``3.x``: ``meta.dataset_meta.classes``; ``bare``: a
    ``meta`` without class names (then COCO's names apply for 80 classes)."""
    import torch
    from mmdet.datasets import CocoDataset

    if state is None:
        state = build_model(architecture, num_classes).state_dict()
    names = tuple(CocoDataset.METAINFO["classes"])[:num_classes]
    meta = {"epoch": 12, "iter": 87960, "mmdet_version": "2.0.0"}
    if layout == "2.x":
        meta["CLASSES"] = names
    elif layout == "3.x":
        meta["dataset_meta"] = {"classes": names}
    torch.save({"state_dict": state, "meta": meta}, path)
    return path
