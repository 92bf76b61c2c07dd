"""The run parameter ``orientations``: every orientation keeps every box exact, pixel for pixel on a painted image
(MMDetection's RandomFlip and this platform's DumpsiteTranspose, built from the run's config as data), and "all"
shows the eight orientations of the square, each about as often."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from mmcv.transforms import Compose
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.utils import register_all_modules

import engine.transforms  # noqa: F401 - registers DumpsiteTranspose, as the training child does
from engine.params import ParamError, validate_params
from engine.pipelines import ORIENTATIONS, pipelines
from tests.engine.configs import generated_overrides

HEIGHT, WIDTH = 40, 48  # not square: a transpose changes the shape, nothing may be cut off
BOXES = [(3, 5, 20, 14), (30, 2, 47, 40), (8, 25, 24, 36)]  # x1, y1, x2, y2; apart, one touching two borders
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def painted() -> np.ndarray:
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for (x1, y1, x2, y2), colour in zip(BOXES, COLOURS, strict=True):
        img[y1:y2, x1:x2] = colour
    return img


def applied(transforms: list[dict], seed: int) -> dict:
    register_all_modules(init_default_scope=True)
    np.random.seed(seed)
    results = {
        "img": painted(),
        "img_shape": (HEIGHT, WIDTH),
        "ori_shape": (HEIGHT, WIDTH),
        "gt_bboxes": HorizontalBoxes(np.array(BOXES, np.float32)),
        "gt_bboxes_labels": np.arange(len(BOXES)),
        "gt_ignore_flags": np.zeros(len(BOXES), bool),
    }
    return Compose(transforms)(results)


def painted_box(img: np.ndarray, colour: tuple[int, int, int]) -> tuple[tuple[int, int, int, int], int]:
    """Where ``colour`` lies in ``img``, as a box in MMDetection's coordinates (pixel edges), and its pixel count."""
    ys, xs = np.nonzero(np.all(img == colour, axis=-1))
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), len(xs)


def the_eight() -> set[bytes]:
    """The eight orientations of the painted image: four quarter turns of it and of its transpose."""
    img = painted()
    return {
        np.ascontiguousarray(np.rot90(base, k)).tobytes() + bytes(np.rot90(base, k).shape[:2])
        for base in (img, img.swapaxes(0, 1))
        for k in range(4)
    }


@pytest.mark.parametrize("orientations, expected", [("none", 1), ("flips", 3), ("all", 8)])
def test_each_orientation_keeps_every_box_exact_and_all_shows_the_eight(orientations, expected):
    seen: Counter[bytes] = Counter()
    for seed in range(400):
        out = applied(ORIENTATIONS[orientations], seed)
        img = out["img"]
        assert out["img_shape"] == img.shape[:2]
        for box, colour, (x1, y1, x2, y2) in zip(out["gt_bboxes"].tensor.tolist(), COLOURS, BOXES, strict=True):
            where, pixels = painted_box(img, colour)
            assert tuple(box) == where, (orientations, seed, box, where)  # pixel for pixel
            assert pixels == (x2 - x1) * (y2 - y1)  # nothing cut off
        seen[img.tobytes() + bytes(img.shape[:2])] += 1
    assert len(seen) == expected and set(seen) <= the_eight()
    if orientations == "all":  # each of the eight about one time in eight (400 draws: 50 expected)
        assert min(seen.values()) >= 25, sorted(seen.values())


def test_the_transposed_sample_packs_for_the_model():
    register_all_modules(init_default_scope=True)
    np.random.seed(0)
    transpose_always = [{"type": "DumpsiteTranspose", "prob": 1.0}, {"type": "PackDetInputs"}]
    packed = applied(transpose_always, 0)
    assert tuple(packed["inputs"].shape) == (3, WIDTH, HEIGHT)
    assert packed["data_samples"].gt_instances.bboxes.tensor.tolist()[0] == [5.0, 3.0, 14.0, 20.0]


def overrides(params: dict) -> dict:
    return generated_overrides(params)


def test_the_parameter_is_checked_defaults_to_flips_and_reaches_the_config_as_data():
    assert validate_params("retinanet_r18_tiny", {})["orientations"] == "flips"  # as runs trained before it existed
    with pytest.raises(ParamError) as refused:
        validate_params("retinanet_r18_tiny", {"orientations": "sideways"})
    assert "one of none, flips, all" in str(refused.value)

    params = validate_params("retinanet_r18_tiny", {"orientations": "all", "image_size": 320})
    o = overrides(params)
    assert o["train_dataloader"]["dataset"]["pipeline"] == pipelines(320, {"orientations": "all"})[0]
    assert {"type": "DumpsiteTranspose", "prob": 0.5} in o["train_dataloader"]["dataset"]["pipeline"]
    # validation is not augmented
    assert o["val_dataloader"]["dataset"]["pipeline"] == pipelines(320, {"orientations": "none"})[1]
    del params["orientations"]  # a run stored before the parameter existed trains as it did
    flips = pipelines(320, {"orientations": "flips"})[0]
    assert overrides(params)["train_dataloader"]["dataset"]["pipeline"] == flips


def test_the_transpose_refuses_a_probability_outside_zero_and_one():
    with pytest.raises(ValueError, match="prob must lie within 0 and 1"):
        engine.transforms.DumpsiteTranspose(prob=1.5)
