"""Training transforms MMDetection lacks, registered in its transform registry. Child-process only (mmdet).

Seen from above a dump site has no "up": all eight orientations of a tile (the dihedral group of the square) are
equally likely. MMDetection's ``RandomFlip`` gives four of them (none, horizontal, vertical, both: a half turn);
a transpose (mirroring across the main diagonal) doubles them to eight, and a quarter turn is a transpose and a flip.
Each keeps axis-aligned boxes exact: pixels move to pixels, no interpolation, nothing cut off, whatever the shape.
"""

from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.registry import TRANSFORMS

TRANSPOSE = "DumpsiteTranspose"


@TRANSFORMS.register_module(name=TRANSPOSE, force=True)
class DumpsiteTranspose(BaseTransform):
    """Swap the image's rows and columns with probability ``prob`` (boxes, masks-free segmentation maps and the
    homography matrix with it); ``transposed`` records whether it did."""

    def __init__(self, prob: float = 0.5) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must lie within 0 and 1, got {prob!r}")
        self.prob = prob

    def transform(self, results: dict) -> dict:
        transposed = bool(np.random.rand() < self.prob)
        results["transposed"] = transposed
        if not transposed:
            return results
        if results.get("gt_masks") is not None:
            raise ValueError(f"{TRANSPOSE} does not handle instance masks; this platform trains boxes only")
        results["img"] = np.ascontiguousarray(np.swapaxes(results["img"], 0, 1))
        results["img_shape"] = results["img"].shape[:2]
        boxes = results.get("gt_bboxes")
        if boxes is not None:
            # (x1, y1, x2, y2) -> (y1, x1, y2, x2): exact, and still within the transposed image
            results["gt_bboxes"] = type(boxes)(boxes.tensor[:, [1, 0, 3, 2]])
        if results.get("gt_seg_map") is not None:
            results["gt_seg_map"] = np.ascontiguousarray(np.swapaxes(results["gt_seg_map"], 0, 1))
        swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
        previous = results.get("homography_matrix")
        results["homography_matrix"] = swap if previous is None else swap @ previous
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prob={self.prob})"
