"""Box sizes against a preset's anchors, without torch: what share of a dataset's boxes the network can match.

An anchor-based detector learns a box from the anchors that overlap it enough (RetinaNet: IoU 0.5; Faster R-CNN's
RPN: 0.7). A box much smaller than the smallest anchor overlaps none of them enough, whatever its place: it is
learnt, if at all, from one weak match. The report compares each box, as the network sees it (after the run's
scaling), with the anchor shapes centred on it; the best IoU is an upper bound (anchors sit on a stride grid).
"""

from __future__ import annotations

import numpy as np

from .presets import AnchorSpec

SMALL_PX = 16  # boxes under this size (square root of their area) are hard for every preset here


def best_iou(sizes: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """For each (width, height) in ``sizes``, the best IoU with an anchor shape centred on it."""
    w, h = sizes[:, :1], sizes[:, 1:2]
    aw, ah = shapes[:, 0][None, :], shapes[:, 1][None, :]
    inter = np.minimum(w, aw) * np.minimum(h, ah)
    return (inter / (w * h + aw * ah - inter)).max(axis=1)


def box_report(sizes: np.ndarray, spec: AnchorSpec | None, scale: float = 1.0) -> dict:
    """Box sizes as the network sees them ((N, 2) widths and heights in pixels) against ``spec``'s anchors at the
    run's ``scale`` (its ``anchor_scale``): the spread of sizes, the share under ``SMALL_PX``, and, for an
    anchor-based preset, the share an anchor matches and the ``anchor_scale`` that would match the most (searched over
    0.25x to 2x, as MMDetection's optimize_anchors tool searches for sizes that fit a dataset)."""
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    sizes = sizes[(sizes > 0).all(axis=1)]
    if not len(sizes):
        return {"boxes": 0}
    side = np.sqrt(sizes[:, 0] * sizes[:, 1])
    report: dict = {
        "boxes": int(len(sizes)),
        "size_px": {q: round(float(np.percentile(side, p)), 1) for q, p in (("p10", 10), ("median", 50), ("p90", 90))},
        f"under_{SMALL_PX}_px": round(float((side < SMALL_PX).mean()), 4),
    }
    if spec is None:
        return report
    shapes = np.array(spec.shapes(scale))
    matched = float((best_iou(sizes, shapes) >= spec.pos_iou).mean())
    candidates = [round(0.25 * 2 ** (i / 4), 3) for i in range(13)]  # 0.25x to 2x in quarter octaves
    scores = [float((best_iou(sizes, np.array(spec.shapes(c))) >= spec.pos_iou).mean()) for c in candidates]
    best = int(np.argmax(scores))
    sides = np.sqrt(shapes[:, 0] * shapes[:, 1])
    report["anchors"] = {
        "sizes_px": [round(float(sides.min()), 1), round(float(sides.max()), 1)],
        "positive_iou": spec.pos_iou,
        "scale": scale,
        "matched": round(matched, 4),
        "best_scale": candidates[best],
        "matched_at_best_scale": round(scores[best], 4),
    }
    return report


def summary_lines(report: dict) -> list[str]:
    """The report in words, for ``train --dry-run``."""
    if not report.get("boxes"):
        return ["Boxes: none to train on."]
    size = report["size_px"]
    lines = [
        f"Boxes as the network sees them: {report['boxes']}, sizes {size['p10']:g} / {size['median']:g} / "
        f"{size['p90']:g} px (10th percentile / median / 90th, square root of the area); "
        f"{report[f'under_{SMALL_PX}_px']:.1%} under {SMALL_PX} px."
    ]
    anchors = report.get("anchors")
    if anchors:
        lines.append(
            f"Anchors {anchors['sizes_px'][0]:g} to {anchors['sizes_px'][1]:g} px (anchor_scale "
            f"{anchors.get('scale', 1.0):g}): {anchors['matched']:.1%} of the boxes overlap one at IoU "
            f"{anchors['positive_iou']:g} or more"
            + (
                f"; anchor_scale {anchors['best_scale']:g} would match {anchors['matched_at_best_scale']:.1%}."
                if anchors["matched_at_best_scale"] > anchors["matched"] + 0.005
                else "; no other anchor scale matches more."
            )
        )
    return lines
