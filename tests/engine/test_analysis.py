"""The engine's analysis against pycocotools' own per-class evaluation, and an exact hand-made confusion case."""

from __future__ import annotations

import contextlib
import io
import random

import pytest

from engine.analysis import analyse, iou, match_image


def _doc(images, boxes, classes):
    return {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in images],
        "annotations": [
            {"id": n + 1, "image_id": img, "category_id": cls, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0}
            for n, (img, cls, bbox) in enumerate(boxes)
        ],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)],
    }


def _random_case(seed: int):
    rng = random.Random(seed)
    classes = ["tyres", "rubble", "bags"]
    boxes, dets = [], []
    for image in range(1, 41):
        for _ in range(rng.randint(0, 4)):
            cls = rng.randint(1, 3)
            x, y = rng.uniform(0, 500), rng.uniform(0, 350)
            w, h = rng.uniform(8, 130), rng.uniform(8, 120)
            boxes.append((image, cls, [x, y, w, h]))
            if rng.random() < 0.8:  # found, jittered, sometimes with the wrong class
                jitter = [
                    x + rng.uniform(-6, 6),
                    y + rng.uniform(-6, 6),
                    w * rng.uniform(0.8, 1.2),
                    h * rng.uniform(0.8, 1.2),
                ]
                label = cls if rng.random() < 0.85 else rng.randint(1, 3)
                dets.append({"image_id": image, "category_id": label, "bbox": jitter, "score": rng.uniform(0.2, 1.0)})
        for _ in range(rng.randint(0, 2)):  # false detections
            dets.append(
                {
                    "image_id": image,
                    "category_id": rng.randint(1, 3),
                    "bbox": [rng.uniform(0, 500), rng.uniform(0, 350), rng.uniform(8, 100), rng.uniform(8, 100)],
                    "score": rng.uniform(0.0, 0.7),
                }
            )
    return _doc(range(1, 41), boxes, classes), dets


def _pycocotools_per_class(doc, dets, category_id):
    """pycocotools evaluating one category on its own (params.catIds), as its users do per class."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = doc
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.params.catIds = [category_id]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0], ev.stats[1], ev.stats[2]


@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_ap_agrees_with_pycocotools(seed):
    doc, dets = _random_case(seed)
    result = analyse(doc, dets, score_threshold=0.3, iou_threshold=0.5)
    assert [row["class"] for row in result["per_class"]] == ["tyres", "rubble", "bags"]
    for i, row in enumerate(result["per_class"]):
        ap, ap50, ap75 = _pycocotools_per_class(doc, dets, i + 1)
        assert row["ap"] == pytest.approx(ap, abs=0.005)
        assert row["ap50"] == pytest.approx(ap50, abs=0.005)
        assert row["ap75"] == pytest.approx(ap75, abs=0.005)
        assert row["gt_boxes"] == sum(1 for a in doc["annotations"] if a["category_id"] == i + 1)
        assert 0 < row["ap50"] < 1  # a real case: neither nothing nor everything found
    # The PR curve at IoU 0.5: 101 recall levels, precision never rising as recall grows (COCO's envelope).
    curve = result["pr_curves"]["0.5"]["tyres"]
    assert len(curve) == 101 and curve[0][0] == 0.0 and curve[-1][0] == 1.0
    precisions = [p for _, p in curve]
    assert all(a >= b for a, b in zip(precisions, precisions[1:], strict=False))


def test_confusion_matrix_of_a_hand_made_case_is_exact():
    classes = ["tyres", "rubble"]
    doc = _doc(
        [1, 2],
        [
            (1, 1, [0, 0, 100, 100]),  # found as tyres
            (1, 1, [200, 200, 50, 50]),  # detected as rubble: confusion tyres -> rubble
            (1, 2, [300, 0, 40, 40]),  # missed (its detection scores below the threshold)
            (2, 2, [10, 10, 60, 60]),  # found as rubble
        ],
        classes,
    )
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [2, 2, 100, 100], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [5, 5, 95, 95], "score": 0.8},  # duplicate: a false detection
        {"image_id": 1, "category_id": 2, "bbox": [200, 200, 50, 50], "score": 0.7},
        {"image_id": 1, "category_id": 2, "bbox": [300, 0, 40, 40], "score": 0.1},  # under the score threshold
        {"image_id": 2, "category_id": 2, "bbox": [10, 10, 60, 60], "score": 0.95},
        {"image_id": 2, "category_id": 1, "bbox": [400, 300, 30, 30], "score": 0.5},  # nothing there
    ]
    result = analyse(doc, dets, score_threshold=0.3, iou_threshold=0.5)
    assert result["confusion"]["labels"] == ["tyres", "rubble", "background"]
    # rows: true class (background: false detections); columns: predicted class (background: missed)
    assert result["confusion"]["matrix"] == [
        [1, 1, 0],
        [0, 1, 1],
        [2, 0, 0],
    ]
    tyres, rubble = result["per_class"]
    assert (tyres["true_positives"], tyres["detections"], tyres["gt_boxes"]) == (1, 3, 2)
    assert tyres["precision"] == pytest.approx(1 / 3) and tyres["recall"] == pytest.approx(0.5)
    assert rubble["precision"] == pytest.approx(0.5) and rubble["recall"] == pytest.approx(0.5)
    first, second = result["images"]
    assert (first["tp"], first["fp"], first["fn"]) == (1, 2, 2)
    assert (second["tp"], second["fp"], second["fn"]) == (1, 1, 0)
    assert [d[-1] for d in first["detections"]] == ["tp", "fp", "wrong_class"]
    assert [g[-1] for g in first["ground_truth"]] == ["found", "wrong_class", "missed"]
    # A stricter IoU threshold turns the slightly shifted match into a miss and a false detection.
    strict = analyse(doc, dets, score_threshold=0.3, iou_threshold=0.95)
    assert strict["confusion"]["matrix"][0][0] == 0


def test_no_detections_means_zero_ap_and_everything_missed():
    doc = _doc([1], [(1, 1, [0, 0, 10, 10])], ["tyres", "bags"])
    result = analyse(doc, [], score_threshold=0.3)
    assert result["per_class"][0]["ap50"] == 0.0 and result["per_class"][0]["recall"] == 0.0
    assert result["per_class"][1]["ap"] is None  # no boxes of that class: no AP, as pycocotools
    assert result["confusion"]["matrix"] == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]


def test_matching_takes_the_best_overlap_and_each_box_once():
    gt = [(0, [0, 0, 10, 10]), (0, [5, 0, 10, 10])]
    dets = [(0, 0.9, [5, 0, 10, 10]), (0, 0.8, [0, 0, 10, 10])]
    gt_match, det_match = match_image(gt, dets, iou_threshold=0.3)
    assert det_match == [1, 0] and gt_match == [1, 0]
    assert iou([0, 0, 10, 10], [10, 10, 5, 5]) == 0.0
