"""Architecture presets: a pinned MMDetection base config plus the overrides that make it this preset.

Bases are named ``mmdet::<path>`` and resolved inside the installed mmdet 3.3.0 package, so they are pinned with it.
No preset loads ImageNet weights (nothing may be downloaded); weights come from a registered base model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AnchorSpec:
    """An anchor generator as MMDetection's ``AnchorGenerator`` builds it: per level, ``base * scale`` for each
    scale, in each aspect ratio (height / width)."""

    strides: tuple[int, ...]
    scales: tuple[float, ...]  # multiples of the stride (RetinaNet: octave_base_scale * 2 ** (i / scales_per_octave))
    ratios: tuple[float, ...]
    pos_iou: float  # the assigner's positive IoU threshold
    head: str = "bbox_head"  # the head of the model whose anchor_generator this is
    octave: bool = False  # sizes from octave_base_scale (RetinaNet); otherwise from its list of scales

    def overrides(self, scale: float) -> dict:
        """The model config keys that make every anchor ``scale`` times its size (merged into the base config's
        anchor generator; the number of anchors per place, and so every tensor's shape, stays the same)."""
        if self.octave:
            return {self.head: {"anchor_generator": {"octave_base_scale": self.scales[0] * scale}}}
        return {self.head: {"anchor_generator": {"scales": [s * scale for s in self.scales]}}}

    def shapes(self, scale: float = 1.0) -> list[tuple[float, float]]:
        """Every anchor's (width, height) in pixels, ``scale`` times the configured size."""
        out = []
        for stride in self.strides:
            for ratio in self.ratios:
                for s in self.scales:
                    size = stride * s * scale
                    out.append((size / math.sqrt(ratio), size * math.sqrt(ratio)))
        return out


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    base_config: str
    model_overrides: dict
    defaults: dict
    # Which config keys carry the number of classes (for the class-count override).
    num_classes_paths: tuple[tuple[str, ...], ...]
    # State-dict prefixes of the layers whose shape or meaning depends on the classes: re-initialised when a run
    # fine-tunes a base model of other classes.
    class_dependent: tuple[str, ...] = ()
    # Presets of one family have the same tensors (names and shapes): a checkpoint of one is a base model for all.
    family: str = ""
    description: str = ""
    notes: dict = field(default_factory=dict)
    # The anchors of its base config with the overrides (engine.anchors compares a dataset's boxes with them).
    anchors: AnchorSpec | None = None


RETINANET_R18_TINY = Preset(
    key="retinanet_r18_tiny",
    label="RetinaNet R-18, 64-channel neck/head (tiny, CPU)",
    base_config="mmdet::retinanet/retinanet_r18_fpn_1x_coco.py",
    # Group norm in the FPN and the head: trained from scratch (no ImageNet weights), the plain RetinaNet head
    # stalls on the focal-loss plateau and spikes; measured on the demo tiles, mAP50 after 5 epochs went from
    # 0.44 (no GN) to 0.72 (GN in the head) and 0.99 (GN in neck and head).
    model_overrides={
        "backbone": {"depth": 18, "init_cfg": None, "norm_eval": False},
        "neck": {
            "in_channels": [64, 128, 256, 512],
            "out_channels": 64,
            "norm_cfg": {"type": "GN", "num_groups": 16, "requires_grad": True},
        },
        "bbox_head": {
            "in_channels": 64,
            "feat_channels": 64,
            "norm_cfg": {"type": "GN", "num_groups": 16, "requires_grad": True},
        },
    },
    defaults={
        "epochs": 5,
        "batch_size": 8,
        "learning_rate": 2e-3,
        "optimizer": "AdamW",
        "weight_decay": 0.05,
        "frozen_stages": -1,
        "image_size": 256,
        "val_fraction": 0.2,
        "seed": 0,
        "warmup_iters": 20,
    },
    num_classes_paths=(("bbox_head", "num_classes"),),
    class_dependent=("bbox_head.retina_cls",),
    # retinanet_r18_fpn: octave_base_scale 4, scales_per_octave 3, strides 8 to 128; MaxIoUAssigner at 0.5
    anchors=AnchorSpec(
        strides=(8, 16, 32, 64, 128),
        scales=tuple(4 * 2 ** (i / 3) for i in range(3)),
        ratios=(0.5, 1.0, 2.0),
        pos_iou=0.5,
        octave=True,
    ),
    description="Trains from scratch on a CPU in minutes; for tests, demos and small tile sets.",
)

FASTER_RCNN_R50 = Preset(
    key="faster_rcnn_r50_fpn",
    label="Faster R-CNN R-50 FPN (standard, GPU)",
    base_config="mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
    model_overrides={"backbone": {"init_cfg": None}},
    defaults={
        "epochs": 12,
        "batch_size": 2,
        "learning_rate": 0.02 / 8,
        "optimizer": "SGD",
        "weight_decay": 1e-4,
        "frozen_stages": 1,
        "image_size": 1024,
        "val_fraction": 0.2,
        "seed": 0,
        "warmup_iters": 500,
    },
    num_classes_paths=(("roi_head", "bbox_head", "num_classes"),),
    # fc_reg is class-specific too (4 box deltas per class: reg_class_agnostic is False in this config).
    class_dependent=("roi_head.bbox_head.fc_cls", "roi_head.bbox_head.fc_reg"),
    # the RPN's anchors: scale 8, strides 4 to 64; its assigner's positive IoU 0.7
    anchors=AnchorSpec(strides=(4, 8, 16, 32, 64), scales=(8.0,), ratios=(0.5, 1.0, 2.0), pos_iou=0.7, head="rpn_head"),
    description="The reference system's detector; meant for a GPU and a registered base model to start from.",
)

FASTER_RCNN_R50_SMALL = Preset(
    key="faster_rcnn_r50_fpn_small",
    label="Faster R-CNN R-50 FPN for small objects on large tiles (GPU)",
    base_config=FASTER_RCNN_R50.base_config,
    # The same network as faster_rcnn_r50_fpn (so the same model-zoo checkpoints load in full), tuned for objects
    # of 10-40 px on 1-2k px drone tiles: anchors half the usual size (16 px at the finest FPN level instead of
    # 32), a larger input, and more proposals and detections kept per image.
    model_overrides={
        "backbone": {"init_cfg": None},
        "rpn_head": {"anchor_generator": {"scales": [4]}},
        "train_cfg": {"rpn_proposal": {"nms_pre": 4000, "max_per_img": 2000}},
        "test_cfg": {"rpn": {"nms_pre": 4000, "max_per_img": 2000}, "rcnn": {"max_per_img": 300}},
    },
    defaults={**FASTER_RCNN_R50.defaults, "image_size": 1344},
    num_classes_paths=FASTER_RCNN_R50.num_classes_paths,
    class_dependent=FASTER_RCNN_R50.class_dependent,
    family=FASTER_RCNN_R50.key,
    anchors=AnchorSpec(strides=(4, 8, 16, 32, 64), scales=(4.0,), ratios=(0.5, 1.0, 2.0), pos_iou=0.7, head="rpn_head"),
    description=(
        "Faster R-CNN with 16 px anchors, 1344 px input and more proposals: small objects (tyres, bags, small "
        "piles) on large tiles. Fine-tunes from the same model-zoo checkpoints as faster_rcnn_r50_fpn."
    ),
)

PRESETS: dict[str, Preset] = {p.key: p for p in (RETINANET_R18_TINY, FASTER_RCNN_R50, FASTER_RCNN_R50_SMALL)}
DEFAULT_PRESET = RETINANET_R18_TINY.key


def preset_choices() -> list[tuple[str, str]]:
    return [(p.key, p.label) for p in PRESETS.values()]


def family_of(key: str) -> str:
    """The weights family of a preset: presets of one family share every tensor's name and shape."""
    preset = PRESETS.get(key)
    return (preset.family or preset.key) if preset else key


def get_preset(key: str) -> Preset:
    try:
        return PRESETS[key]
    except KeyError:
        raise KeyError(f"unknown architecture preset {key!r}; choose one of {', '.join(PRESETS)}") from None
