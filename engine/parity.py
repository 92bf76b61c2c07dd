"""The parity gate of an ONNX export: does the exported graph find what the PyTorch model finds, on the model's own
validation images? Pure NumPy and pycocotools (no torch): the two sides' detections come in as lists.

Passing means all three:
- bbox mAP50 of the two sides within ``MAP50_TOLERANCE`` of each other (pycocotools, as MMDetection's metric);
- every PyTorch detection at or above the score threshold matched by an ONNX detection of the same class with
  IoU >= ``MATCH_IOU`` and a score within ``SCORE_TOLERANCE`` (the share matched is reported either way);
- the ONNX side ran on every image.
The report says where they differ: the worst images, with the PyTorch detections left unmatched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .analysis import coco_eval

MAP50_TOLERANCE = 0.005
MATCH_IOU = 0.99
SCORE_TOLERANCE = 1e-3
WORST_SHOWN = 5

# One image's detections: (boxes [[x1, y1, x2, y2], ...], scores, labels), in the image's pixels.
Detections = tuple[list, list, list]


def box_iou(box: list[float], others: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box with each row of ``others`` (no +1, as MMDetection and COCO)."""
    if len(others) == 0:
        return np.zeros(0)
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    union = area + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(reference: Detections, candidate: Detections, threshold: float) -> tuple[int, list[dict]]:
    """How many of ``reference``'s detections at or above ``threshold`` ``candidate`` matches (same class, IoU >=
    MATCH_IOU, score within SCORE_TOLERANCE; each candidate used once), and the unmatched ones with their nearest
    candidate of the class."""
    boxes = np.asarray(candidate[0], dtype=np.float64).reshape(-1, 4)
    scores, labels = np.asarray(candidate[1], dtype=np.float64), np.asarray(candidate[2])
    used = np.zeros(len(boxes), dtype=bool)
    matched, missed = 0, []
    order = sorted(range(len(reference[1])), key=lambda i: -reference[1][i])
    for i in order:
        box, score, label = reference[0][i], float(reference[1][i]), int(reference[2][i])
        if score < threshold:
            continue
        ious = np.where((labels == label) & ~used, box_iou(box, boxes), -1.0)
        ok = (ious >= MATCH_IOU) & (np.abs(scores - score) <= SCORE_TOLERANCE)
        if ok.any():
            j = int(np.argmax(np.where(ok, ious, -1.0)))
            used[j] = True
            matched += 1
            continue
        nearest = int(np.argmax(ious)) if len(ious) and ious.max() >= 0 else None
        missed.append(
            {
                "label": label,
                "score": round(score, 5),
                "box": [round(float(v), 2) for v in box],
                "nearest_iou": round(float(ious[nearest]), 4) if nearest is not None else None,
                "nearest_score": round(float(scores[nearest]), 5) if nearest is not None else None,
            }
        )
    return matched, missed


def map50(gt_doc: dict, results: dict[int, Detections], category_ids: list[int]) -> float | None:
    """bbox mAP50 over ``gt_doc`` of per-image detections (label i is ``category_ids[i]``); None without boxes."""
    if not gt_doc.get("annotations"):
        return None
    detections = [
        {
            "image_id": image_id,
            "category_id": category_ids[int(label)],
            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
            "score": float(score),
        }
        for image_id, (boxes, scores, labels) in results.items()
        for box, score, label in zip(boxes, scores, labels, strict=True)
    ]
    ev = coco_eval(gt_doc, detections)
    return 0.0 if ev is None else round(max(float(ev.stats[1]), 0.0), 6)


def gate(
    gt_doc: dict,
    reference: dict[int, Detections],
    candidate: dict[int, Detections],
    *,
    threshold: float,
    seconds: dict[str, float],
) -> dict[str, Any]:
    """The gate's verdict and report for the two sides' detections per image id (``seconds``: each side's total
    time over the same images, one thread count)."""
    category_ids = [c["id"] for c in gt_doc["categories"]]
    images = [i["id"] for i in gt_doc["images"]]
    total = matched = 0
    worst: list[dict] = []
    for image_id in images:
        ref = reference[image_id]
        shown = sum(1 for s in ref[1] if s >= threshold)
        got, missed = match(ref, candidate.get(image_id, ([], [], [])), threshold)
        total, matched = total + shown, matched + got
        if missed:
            worst.append({"image_id": image_id, "detections": shown, "unmatched": missed[:WORST_SHOWN]})
    worst.sort(key=lambda w: -len(w["unmatched"]))
    maps = {"pytorch": map50(gt_doc, reference, category_ids), "onnxruntime": map50(gt_doc, candidate, category_ids)}
    ours, theirs = maps["pytorch"], maps["onnxruntime"]
    difference = None if ours is None or theirs is None else round(abs(ours - theirs), 6)
    failures = []
    if difference is not None and difference > MAP50_TOLERANCE:
        failures.append(f"mAP50 differs by {difference:.4f} (at most {MAP50_TOLERANCE})")
    if matched < total:
        failures.append(
            f"{total - matched} of {total} PyTorch detections at score >= {threshold} have no ONNX match "
            f"(IoU >= {MATCH_IOU}, score within {SCORE_TOLERANCE})"
        )
    missing = [i for i in images if i not in candidate]
    if missing:
        failures.append(f"ONNX Runtime gave no result for {len(missing)} images")
    per_image = {k: round(v / max(len(images), 1), 4) for k, v in seconds.items()}
    return {
        "passed": not failures,
        "failures": failures,
        "images": len(images),
        "map50": maps,
        "map50_difference": difference,
        "matched": {"count": matched, "total": total, "share": round(matched / total, 4) if total else 1.0},
        "score_threshold": threshold,
        "tolerances": {"map50": MAP50_TOLERANCE, "iou": MATCH_IOU, "score": SCORE_TOLERANCE},
        "seconds_per_image": per_image,
        "speedup": round(per_image["pytorch"] / per_image["onnxruntime"], 2) if per_image.get("onnxruntime") else None,
        "worst_images": worst[:WORST_SHOWN],
    }
