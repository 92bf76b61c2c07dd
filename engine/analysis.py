"""What a detector got right and wrong on a set of annotated images: COCO AP per class, precision-recall curves,
a confusion matrix with background, and per-image outcomes for the gallery. Plain data in, plain data out.

The AP figures are pycocotools' own (the same ``COCOeval`` MMDetection's ``CocoMetric`` runs, its precision array
sliced per class, as ``classwise=True`` does). Everything at a score threshold (precision, recall, the confusion
matrix, the image outcomes) comes from one one-to-one matching, done here:

1. detections at or above the score threshold, highest score first, each take the unmatched ground-truth box of
   their own class they overlap most, at IoU >= the IoU threshold: true positives (the diagonal);
2. detections left over take, in the same order, the unmatched box of another class they overlap most at that
   IoU: a confusion of the true class with the predicted one;
3. detections still left are false detections (the background row), boxes still left are missed (the background
   column).

Each box and each detection is counted once, so every row of the matrix sums to that class's boxes and every
column to that class's detections.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from typing import Any

IOU_THRESHOLDS = (0.5, 0.75)  # the PR curves drawn
BACKGROUND = "background"


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two ``[x, y, w, h]`` boxes, COCO style (areas w * h, no +1)."""
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match_image(
    gt: list[tuple[int, list[float]]], dets: list[tuple[int, float, list[float]]], *, iou_threshold: float
) -> tuple[list[int | None], list[int | None]]:
    """Match one image's boxes ``(class, bbox)`` and detections ``(class, score, bbox)``, the latter already cut at
    the score threshold. Returns ``(gt_match, det_match)``: for each box / detection the index of its partner on
    the other side, or None."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i][1])  # stable: ties keep their order
    gt_match: list[int | None] = [None] * len(gt)
    det_match: list[int | None] = [None] * len(dets)
    overlaps = [[iou(dets[d][2], g[1]) for g in gt] for d in range(len(dets))]
    for same_class in (True, False):
        for d in order:
            if det_match[d] is not None:
                continue
            best, best_iou = None, iou_threshold
            for g, (g_cls, _) in enumerate(gt):
                if gt_match[g] is not None or (g_cls == dets[d][0]) != same_class:
                    continue
                if overlaps[d][g] >= best_iou and (best is None or overlaps[d][g] > best_iou):
                    best, best_iou = g, overlaps[d][g]
            if best is not None:
                gt_match[best], det_match[d] = d, best
    return gt_match, det_match


def coco_eval(gt_doc: dict, detections: list[dict]) -> Any:
    """pycocotools' evaluation of all classes; None when there is nothing to evaluate."""
    # torch / MMDetection load only where this runs (a child process), never on import
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections or not gt_doc.get("annotations"):
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {k: v for k, v in gt_doc.items() if k in ("images", "annotations", "categories", "info")}
        gt.createIndex()
        dt = gt.loadRes([{k: d[k] for k in ("image_id", "category_id", "bbox", "score")} for d in detections])
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _mean_valid(values: Any) -> float | None:
    valid = [float(v) for v in values if v > -1]
    return round(sum(valid) / len(valid), 6) if valid else None


def _coco_figures(
    gt_doc: dict, detections: list[dict], names: list[str], index_of: dict, gt_count: dict
) -> tuple[dict[str, float | None], dict[int, dict[str, float | None]], dict[str, dict[str, list]]]:
    """pycocotools' figures: overall (mAP...), per class (AP, AP50, AP75) and precision-recall curves."""
    k = len(names)
    ev = coco_eval(gt_doc, detections)
    keys = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")
    overall: dict[str, float | None] = dict.fromkeys(keys)
    ap: dict[int, dict[str, float | None]] = {i: {"ap": None, "ap50": None, "ap75": None} for i in range(k)}
    curves: dict[str, dict[str, list]] = {str(t): {} for t in IOU_THRESHOLDS}
    if ev is None:
        if gt_doc.get("annotations"):  # boxes but no detections: nothing found
            overall = dict.fromkeys(overall, 0.0)
            ap = {i: ({"ap": 0.0, "ap50": 0.0, "ap75": 0.0} if gt_count[i] else ap[i]) for i in range(k)}
        return overall, ap, curves
    overall.update(zip(overall, (round(max(float(s), 0.0), 6) for s in ev.stats[:6]), strict=True))
    precision = ev.eval["precision"]  # [iou thresholds, recall levels, classes, areas, max dets]
    iou_index = {round(float(t), 2): i for i, t in enumerate(ev.params.iouThrs)}
    recalls = [round(float(r), 2) for r in ev.params.recThrs]
    for cat_pos, cat_id in enumerate(ev.params.catIds):
        i = index_of[cat_id]
        if not gt_count[i]:
            continue  # pycocotools has no AP for a class without boxes
        per_class = precision[:, :, cat_pos, 0, -1]
        ap[i] = {
            "ap": _mean_valid(per_class.ravel()),
            "ap50": _mean_valid(per_class[iou_index[0.5]]),
            "ap75": _mean_valid(per_class[iou_index[0.75]]),
        }
        for t in IOU_THRESHOLDS:
            row = per_class[iou_index[t]]
            curves[str(t)][names[i]] = [[r, round(max(float(p), 0.0), 4)] for r, p in zip(recalls, row, strict=True)]
    return overall, ap, curves


def _image_outcome(image_id: int, gt: list, dets: list, matrix: list[list[int]], *, iou_threshold: float) -> dict:
    """One image matched one-to-one at the thresholds: its rows marked, the confusion ``matrix`` counted."""
    k = len(matrix) - 1
    gt_match, det_match = match_image(gt, dets, iou_threshold=iou_threshold)
    tp = fp = fn = 0
    det_rows, gt_rows = [], []
    for d, (cls, score, box) in enumerate(dets):
        partner = det_match[d]
        if partner is None:
            matrix[k][cls] += 1
            status = "fp"
        elif gt[partner][0] == cls:
            matrix[cls][cls] += 1
            status = "tp"
        else:
            matrix[gt[partner][0]][cls] += 1
            status = "wrong_class"
        tp += status == "tp"
        fp += status != "tp"
        det_rows.append([cls, round(score, 4), *(round(v, 2) for v in box), status])
    for g, (cls, box) in enumerate(gt):
        partner = gt_match[g]
        if partner is None:
            matrix[cls][k] += 1
            status = "missed"
        else:
            status = "found" if dets[partner][0] == cls else "wrong_class"
        fn += status != "found"
        gt_rows.append([cls, *(round(v, 2) for v in box), status])
    return {
        "image_id": image_id,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "classes": sorted({r[0] for r in det_rows} | {r[0] for r in gt_rows}),
        "detections": det_rows,
        "ground_truth": gt_rows,
    }


def _per_class_table(names: list[str], ap: dict, matrix: list[list[int]], gt_count: dict) -> list[dict]:
    k = len(names)
    rows = []
    for i, name in enumerate(names):
        tp = matrix[i][i]
        predicted = sum(matrix[r][i] for r in range(k + 1))
        rows.append(
            {
                "class": name,
                **ap[i],
                "precision": round(tp / predicted, 6) if predicted else None,
                "recall": round(tp / gt_count[i], 6) if gt_count[i] else None,
                "gt_boxes": gt_count[i],
                "detections": predicted,
                "true_positives": tp,
            }
        )
    return rows


def analyse(gt_doc: dict, detections: list[dict], *, score_threshold: float = 0.3, iou_threshold: float = 0.5) -> dict:
    """Evaluate COCO ``detections`` (``image_id``, ``category_id``, ``bbox`` [x, y, w, h], ``score``) against the
    COCO document ``gt_doc`` (categories 1..N in class order)."""
    categories = sorted(gt_doc["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in categories]
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    k = len(names)
    detections = [d for d in detections if d["category_id"] in index_of]
    gt_count: dict[int, int] = defaultdict(int)
    for a in gt_doc.get("annotations", ()):
        gt_count[index_of[a["category_id"]]] += 1
    overall, ap, curves = _coco_figures(gt_doc, detections, names, index_of, gt_count)

    # One-to-one matching at the thresholds: the confusion matrix and each image's outcome.
    matrix = [[0] * (k + 1) for _ in range(k + 1)]
    boxes_of: dict[int, list] = defaultdict(list)
    for a in gt_doc.get("annotations", ()):
        boxes_of[a["image_id"]].append((index_of[a["category_id"]], [float(v) for v in a["bbox"]]))
    dets_of: dict[int, list] = defaultdict(list)
    for d in detections:
        if d["score"] >= score_threshold:
            dets_of[d["image_id"]].append(
                (index_of[d["category_id"]], float(d["score"]), [float(v) for v in d["bbox"]])
            )
    images = [
        _image_outcome(
            image["id"],
            boxes_of.get(image["id"], []),
            dets_of.get(image["id"], []),
            matrix,
            iou_threshold=iou_threshold,
        )
        for image in gt_doc["images"]
    ]
    return {
        "classes": names,
        "score_threshold": score_threshold,
        "iou_threshold": iou_threshold,
        "overall": overall,
        "per_class": _per_class_table(names, ap, matrix, gt_count),
        "pr_curves": curves,
        "confusion": {"labels": [*names, BACKGROUND], "matrix": matrix},
        "images": images,
        "counts": {
            "images": len(gt_doc["images"]),
            "gt_boxes": sum(gt_count.values()),
            "detections": len(detections),
            "detections_above_threshold": sum(len(v) for v in dets_of.values()),
        },
    }
