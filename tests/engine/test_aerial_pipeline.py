"""The aerial recipe's transforms, built from the run's config as data: crops keep every kept box at least the share
rule inside (pixel for pixel on a painted image), resampling to a ground resolution scales boxes within half a pixel,
the colour jitter moves colours and never boxes, and the pipelines stay data."""

from __future__ import annotations

import numpy as np
import pytest
from mmcv.transforms import Compose
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.utils import register_all_modules

import engine.transforms  # noqa: F401 - registers the platform's transforms, as the training child does
from engine.anchors import box_report
from engine.params import ParamError, validate_params
from engine.pipelines import COLOUR, CROP_MIN_VISIBLE, describe, gsd_factor, stock_config, trained_gsd
from engine.presets import PRESETS
from tests.engine.configs import generated_overrides

HEIGHT, WIDTH = 150, 210
# x1, y1, x2, y2; colours tell them apart after a crop
BOXES = [(10, 12, 40, 30), (60, 70, 118, 140), (150, 5, 200, 45), (170, 100, 209, 149), (90, 20, 100, 26)]
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def painted(height: int = HEIGHT, width: int = WIDTH, boxes=BOXES) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    for (x1, y1, x2, y2), colour in zip(boxes, COLOURS, strict=False):
        img[y1:y2, x1:x2] = colour
    return img


def applied(transforms: list[dict], seed: int, *, gsd: float | None = None, boxes=BOXES, img=None) -> dict:
    register_all_modules(init_default_scope=True)
    np.random.seed(seed)
    img = painted(boxes=boxes) if img is None else img
    results = {
        "img": img,
        "img_shape": img.shape[:2],
        "ori_shape": img.shape[:2],
        "gt_bboxes": HorizontalBoxes(np.array(boxes, np.float32)),
        "gt_bboxes_labels": np.arange(len(boxes)),
        "gt_ignore_flags": np.zeros(len(boxes), bool),
        "gsd": gsd,
    }
    return Compose(transforms)(results)


def area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def test_crops_keep_each_kept_box_above_the_share_and_pixel_exact():
    crop = {"type": "DumpsiteBoxCrop", "size": 64, "box_share": 0.75, "min_visible": CROP_MIN_VISIBLE}
    ignored_seen = kept_cut_seen = empty_seen = 0
    for seed in range(300):
        out = applied([crop], seed, img=painted(300, 400))  # room for crops that hold no box
        img = out["img"]
        assert img.shape[:2] == (64, 64) and out["img_shape"] == (64, 64)
        dx, dy = out["homography_matrix"][0, 2], out["homography_matrix"][1, 2]
        for box, label, ignored in zip(
            out["gt_bboxes"].tensor.tolist(), out["gt_bboxes_labels"], out["gt_ignore_flags"], strict=True
        ):
            original = BOXES[label]
            share = area(box) / area(original)
            ys, xs = np.nonzero(np.all(img == COLOURS[label], axis=-1))
            # pixel for pixel: the box is exactly where its colour lies in the crop
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(box), (seed, label, box)
            assert [box[0] - dx, box[1] - dy][0] >= original[0] - 1e-6  # the crop's shift is the homography's
            if ignored:
                ignored_seen += 1
                assert share < CROP_MIN_VISIBLE
            else:
                assert share >= CROP_MIN_VISIBLE - 1e-6, (seed, label, share)
                kept_cut_seen += share < 1
        empty_seen += not len(out["gt_bboxes"])
        # every box the crop shows any of is listed (kept or ignored): none silently becomes background
        shown = {i for i, colour in enumerate(COLOURS) if np.all(img == colour, axis=-1).any()}
        assert shown == set(out["gt_bboxes_labels"].tolist())
    assert ignored_seen and kept_cut_seen and empty_seen  # all three cases were met


def test_a_crop_around_a_box_holds_it_whole_and_background_crops_fall_anywhere():
    around = {"type": "DumpsiteBoxCrop", "size": 64, "box_share": 1.0}
    for seed in range(100):
        out = applied([around], seed)
        whole = [b for b in out["gt_bboxes"].tensor.tolist() if area(b) > 0]
        labels = out["gt_bboxes_labels"].tolist()
        # the chosen box fits in a 64 px crop (all but box 1, 58 x 70, which is centred): one box is whole
        assert any(area(b) == area(BOXES[i]) for b, i in zip(whole, labels, strict=True)) or 1 in labels
    anywhere = {"type": "DumpsiteBoxCrop", "size": 64, "box_share": 0.0}
    origins = {tuple(applied([anywhere], seed)["homography_matrix"][:2, 2].tolist()) for seed in range(50)}
    assert len(origins) > 40  # spread over the image, not drawn to boxes


def test_an_image_smaller_than_the_crop_stays_whole():
    out = applied([{"type": "DumpsiteBoxCrop", "size": 512}], 0)
    assert out["img"].shape[:2] == (HEIGHT, WIDTH)
    assert out["gt_bboxes"].tensor.tolist() == [list(map(float, b)) for b in BOXES]


@pytest.mark.parametrize("gsd, target", [(0.03, 0.1), (0.1, 0.03), (0.05, 0.05), (0.02, 0.07)])
def test_resampling_to_a_ground_resolution_scales_boxes_within_half_a_pixel(gsd, target):
    out = applied([{"type": "DumpsiteRescale", "target_gsd": target}], 0, gsd=gsd)
    factor = gsd_factor(gsd, target)
    img = out["img"]
    assert img.shape[:2] == (round(HEIGHT * factor), round(WIDTH * factor))
    assert out["scale_factor"] == pytest.approx((img.shape[1] / WIDTH, img.shape[0] / HEIGHT))
    for box, (x1, y1, x2, y2), colour in zip(out["gt_bboxes"].tensor.tolist(), BOXES, COLOURS, strict=True):
        expected = [x1 * factor, y1 * factor, x2 * factor, y2 * factor]
        assert max(abs(a - b) for a, b in zip(box, expected, strict=True)) <= 0.5, (box, expected)
        # the painted object: the centre of its mass in the resampled image is the box's, within half a pixel
        mass = img.max(axis=-1).astype(float) / 255
        ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]] + 0.5
        bx1, by1, bx2, by2 = box
        near_x = np.abs(xs - (bx1 + bx2) / 2) < (bx2 - bx1) / 2 + 2
        near = near_x & (np.abs(ys - (by1 + by2) / 2) < (by2 - by1) / 2 + 2)
        local = mass * near
        assert abs((local * xs).sum() / local.sum() - (bx1 + bx2) / 2) <= 0.5
        assert abs((local * ys).sum() / local.sum() - (by1 + by2) / 2) <= 0.5
        # and its extent: the mass is the box's area (averaging keeps it; enlarging interpolates it)
        assert abs(local.sum() - area(box)) <= 0.5 * ((bx2 - bx1) + (by2 - by1)) + 1, colour


def test_an_image_without_a_ground_resolution_is_left_as_it_is_and_upscaling_is_bounded():
    out = applied([{"type": "DumpsiteRescale", "target_gsd": 0.1}], 0, gsd=None)
    assert out["img"].shape[:2] == (HEIGHT, WIDTH) and out["scale_factor"] == (1.0, 1.0)
    assert gsd_factor(1.0, 0.01) == 4.0  # a 1 m image is not blown up 100 times


def test_colour_jitter_moves_colours_never_boxes():
    img = np.full((HEIGHT, WIDTH, 3), 120, np.uint8)
    img[::2] = (60, 140, 200)
    changed = 0
    for seed in range(20):
        out = applied(COLOUR["jitter"], seed, img=img.copy())
        assert out["gt_bboxes"].tensor.tolist() == [list(map(float, b)) for b in BOXES]
        assert out["img"].shape == img.shape
        changed += not np.array_equal(out["img"], img)
    assert changed >= 15


def params(**given) -> dict:
    return validate_params("retinanet_r18_tiny", {"image_size": 256, **given})


def overrides(p: dict, classes=("waste",)) -> dict:
    return generated_overrides(p, classes=classes)


def test_the_aerial_parameters_are_checked():
    with pytest.raises(ParamError) as refused:
        params(target_gsd=0.05)
    assert "needs resize 'crops'" in refused.value.errors["target_gsd"]
    with pytest.raises(ParamError) as refused:
        params(resize="crops", target_gsd=0.001)
    assert "at least 0.005" in refused.value.errors["target_gsd"]
    with pytest.raises(ParamError):
        params(scale_jitter=0.9)
    assert params()["resize"] == "whole" and params()["colour"] == "none"


def test_the_default_pipeline_is_unchanged_and_the_aerial_one_is_data():
    assert overrides(params())["train_dataloader"]["dataset"]["pipeline"] == [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "Resize", "scale": [256, 256], "keep_ratio": True},
        {"type": "RandomFlip", "prob": [0.25, 0.25], "direction": ["horizontal", "vertical"]},
        {"type": "PackDetInputs"},
    ]
    hostile = ["{{ _base_.model }}", "x'); import os #", "$HOME"]
    aerial = params(resize="crops", target_gsd=0.1, colour="jitter", scale_jitter=0.2, orientations="all")
    o = overrides(aerial, hostile)
    train = o["train_dataloader"]["dataset"]
    assert train["type"] == "DumpsiteCocoDataset" and train["metainfo"]["classes"] == hostile
    types = [step["type"] for step in train["pipeline"]]
    assert types == [
        "LoadImageFromFile",
        "LoadAnnotations",
        "DumpsiteRescale",
        "DumpsiteBoxCrop",
        "YOLOXHSVRandomAug",
        "Contrast",
        "RandomFlip",
        "DumpsiteTranspose",
        "PackDetInputs",
    ]
    assert train["pipeline"][2] == {"type": "DumpsiteRescale", "target_gsd": 0.1, "ratio_range": [0.8, 1.2]}
    val = o["val_dataloader"]["dataset"]["pipeline"]
    assert val[1] == {"type": "DumpsiteRescale", "target_gsd": 0.1}  # resampled, not augmented, not cropped
    stock = stock_config(o)
    assert stock["test_dataloader"]["dataset"]["type"] == "CocoDataset"
    stock_test = stock["test_dataloader"]["dataset"]["pipeline"]
    assert {"type": "Resize", "scale_factor": 1.0, "keep_ratio": True} in stock_test
    assert all("Dumpsite" not in step["type"] for step in stock["test_dataloader"]["dataset"]["pipeline"])
    # every transform the pipelines name exists in MMDetection's registry (or the platform's, registered above)
    from mmdet.registry import TRANSFORMS

    register_all_modules(init_default_scope=True)
    for step in train["pipeline"] + val:
        assert TRANSFORMS.get(step["type"]) is not None, step["type"]
    for seed in range(8):  # the whole training pipeline runs on a loaded image, through to the packed sample
        packed = applied(train["pipeline"][2:], seed, gsd=0.05, img=painted(300, 400))
        assert packed["inputs"].shape[0] == 3 and max(packed["inputs"].shape[1:]) <= 256


def test_the_pipeline_in_words_and_the_ground_resolution_a_model_saw():
    whole = describe(params())
    assert whole[0] == "resized so that the longest side is 256 px" and "validation" in whole[-1]
    crops = describe(params(resize="crops", target_gsd=0.05, colour="jitter"))
    assert crops[0].startswith("resampled to 5 cm per pixel") and any("jittered" in s for s in crops)
    resolution = {"images": 3, "min_m": 0.03, "median_m": 0.05, "max_m": 0.1, "longest_side_median_m": 64.0}
    assert trained_gsd(params(), resolution) == 0.25  # 64 m of ground over 256 px
    assert trained_gsd(params(resize="crops"), resolution) == 0.05
    assert trained_gsd(params(resize="crops", target_gsd=0.08), resolution) == 0.08
    assert trained_gsd(params(resize="crops", target_gsd=0.08), None) is None


def test_the_anchor_report_finds_boxes_too_small_for_the_preset():
    retinanet = PRESETS["retinanet_r18_tiny"].anchors
    small = np.array([[10, 12], [14, 9], [12, 12], [40, 40]], dtype=float)
    report = box_report(small, retinanet)
    assert report["boxes"] == 4 and report["under_16_px"] == 0.75
    assert report["anchors"]["sizes_px"][0] == 32.0  # 4 x stride 8
    assert report["anchors"]["matched"] == 0.25  # only the 40 px box overlaps a 32-50 px anchor at IoU 0.5
    assert report["anchors"]["best_scale"] < 1 and report["anchors"]["matched_at_best_scale"] > 0.25


def test_the_presets_anchor_specs_match_their_mmdetection_configs():
    from mmdet.registry import TASK_UTILS
    from mmengine.config import Config

    from engine.loading import resolve_base_config

    register_all_modules(init_default_scope=True)
    for preset in PRESETS.values():
        cfg = Config.fromfile(resolve_base_config(preset.base_config))
        cfg.merge_from_dict({"model": preset.model_overrides})
        head = cfg.model.get("rpn_head") or cfg.model.bbox_head
        generator = TASK_UTILS.build(head.anchor_generator)
        built = sorted(
            (round(float(w), 2), round(float(h), 2))
            for base in generator.gen_base_anchors()
            for x1, y1, x2, y2 in base.tolist()
            for w, h in [(x2 - x1, y2 - y1)]
        )
        assert built == sorted((round(w, 2), round(h, 2)) for w, h in preset.anchors.shapes()), preset.key
