"""Training transforms MMDetection lacks, registered in its transform registry. Child-process only (mmdet).

Seen from above a dump site has no "up": all eight orientations of a tile (the dihedral group of the square) are
equally likely. MMDetection's ``RandomFlip`` gives four of them (none, horizontal, vertical, both: a half turn);
a transpose (mirroring across the main diagonal) doubles them to eight, and a quarter turn is a transpose and a flip.
Each keeps axis-aligned boxes exact: pixels move to pixels, no interpolation, nothing cut off, whatever the shape.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet.datasets import CocoDataset
from mmdet.datasets.transforms import Resize
from mmdet.registry import DATASETS, TRANSFORMS

from .pipelines import gsd_factor

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


RESCALE = "DumpsiteRescale"
BOX_CROP = "DumpsiteBoxCrop"
DATASET = "DumpsiteCocoDataset"


@DATASETS.register_module(name=DATASET, force=True)
class DumpsiteCocoDataset(CocoDataset):
    """MMDetection's COCO dataset that keeps each image's ground resolution (``gsd``, metres per pixel, written by
    the platform's export) in its data info, for ``DumpsiteRescale``."""

    def parse_data_info(self, raw_data_info: dict) -> dict | list[dict]:
        info = super().parse_data_info(raw_data_info)
        info["gsd"] = raw_data_info["raw_img_info"].get("gsd")
        return info


@TRANSFORMS.register_module(name=RESCALE, force=True)
class DumpsiteRescale(Resize):
    """Resample an image to ``target_gsd`` metres per pixel (from its ``gsd``; an image without one stays as it
    is), times a random factor within ``ratio_range`` where given (random resized crops). The one resize of a
    full-resolution pipeline: ``scale_factor`` is relative to the image as loaded, so predictions map back to it.
    Boxes scale with the pixel grid: the sizes are rounded, and both axes use the exact ratio of the new size to the
    old. Shrinking averages areas, enlarging interpolates."""

    def __init__(self, target_gsd: float | None = None, ratio_range: list[float] | None = None) -> None:
        super().__init__(scale_factor=1.0, keep_ratio=False, clip_object_border=True)
        if ratio_range is not None and not (len(ratio_range) == 2 and 0 < ratio_range[0] <= ratio_range[1]):
            raise ValueError(f"ratio_range must be [low, high] with 0 < low <= high, got {ratio_range!r}")
        self.target_gsd = target_gsd
        self.ratio_range = list(ratio_range) if ratio_range is not None else None

    def transform(self, results: dict) -> dict:
        factor = gsd_factor(results.get("gsd"), self.target_gsd)
        if self.ratio_range is not None:
            low, high = self.ratio_range
            factor *= float(np.random.uniform(low, high))
        height, width = results["img"].shape[:2]
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        if size == (width, height):
            results["img_shape"] = (height, width)
            results["scale"] = size
            results["scale_factor"] = (1.0, 1.0)
            results["keep_ratio"] = False
            return results
        results["scale"] = size
        # Shrinking averages each new pixel's area (no aliasing of fine texture, and boxes keep their mass);
        # enlarging interpolates.
        self.interpolation = "area" if factor < 1 else "bilinear"
        self._resize_img(results)
        self._resize_bboxes(results)
        self._resize_seg(results)
        self._record_homography_matrix(results)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_gsd={self.target_gsd}, ratio_range={self.ratio_range})"


@TRANSFORMS.register_module(name=BOX_CROP, force=True)
class DumpsiteBoxCrop(BaseTransform):
    """A ``size`` x ``size`` crop (smaller images stay whole): with probability ``box_share`` placed at random so that
    it holds a box chosen at random (its centre, when the box is larger than the crop), otherwise anywhere.

    A box the crop cuts is kept, clipped, when at least ``min_visible`` of its area lies inside; a box cut more is
    ignored (``gt_ignore_flags``: neither object nor background for the loss); a box outside is dropped. So no kept
    box is a sliver the model would be taught to call a whole object.
    """

    def __init__(self, size: int, box_share: float = 0.75, min_visible: float = 0.5) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size!r}")
        if not 0.0 <= box_share <= 1.0 or not 0.0 < min_visible <= 1.0:
            raise ValueError("box_share must lie within 0 and 1, and min_visible within 0 (excluded) and 1")
        self.size, self.box_share, self.min_visible = size, box_share, min_visible

    def _origin(self, results: dict, width: int, height: int, crop_w: int, crop_h: int) -> tuple[int, int]:
        boxes = results.get("gt_bboxes")
        count = 0 if boxes is None else len(boxes)
        if boxes is not None and count and np.random.rand() < self.box_share:
            x1, y1, x2, y2 = boxes.tensor[np.random.randint(count)].tolist()
            return (
                self._around(x1, x2, crop_w, width),
                self._around(y1, y2, crop_h, height),
            )
        return np.random.randint(width - crop_w + 1), np.random.randint(height - crop_h + 1)

    @staticmethod
    def _around(low: float, high: float, crop: int, extent: int) -> int:
        """An origin along one axis at which the crop holds [low, high] (centred on it when it cannot)."""
        first, last = math.ceil(high) - crop, math.floor(low)
        if first > last:  # the box is longer than the crop
            first = last = round((low + high) / 2 - crop / 2)
        first, last = max(0, first), min(extent - crop, last)
        return int(np.random.randint(first, last + 1)) if first <= last else max(0, min(extent - crop, first))

    def transform(self, results: dict) -> dict:
        height, width = results["img"].shape[:2]
        crop_w, crop_h = min(self.size, width), min(self.size, height)
        if (crop_w, crop_h) == (width, height):
            return results
        x0, y0 = self._origin(results, width, height, crop_w, crop_h)
        results["img"] = np.ascontiguousarray(results["img"][y0 : y0 + crop_h, x0 : x0 + crop_w])
        results["img_shape"] = (crop_h, crop_w)
        if results.get("gt_seg_map") is not None:
            results["gt_seg_map"] = results["gt_seg_map"][y0 : y0 + crop_h, x0 : x0 + crop_w]
        shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], dtype=np.float32)
        previous = results.get("homography_matrix")
        results["homography_matrix"] = shift if previous is None else shift @ previous
        boxes = results.get("gt_bboxes")
        if boxes is None or not len(boxes):
            return results
        original = boxes.tensor.clone()
        area = ((original[:, 2] - original[:, 0]) * (original[:, 3] - original[:, 1])).clamp(min=1e-6)
        moved = original - original.new_tensor([x0, y0, x0, y0])
        limits = original.new_tensor([crop_w, crop_h, crop_w, crop_h])
        clipped = torch.minimum(moved.clamp(min=0), limits)
        visible = (clipped[:, 2] - clipped[:, 0]).clamp(min=0) * (clipped[:, 3] - clipped[:, 1]).clamp(min=0)
        inside = (visible > 0).numpy()
        kept = (visible / area >= self.min_visible - 1e-6).numpy()
        results["gt_bboxes"] = type(boxes)(clipped[inside])
        if results.get("gt_bboxes_labels") is not None:
            results["gt_bboxes_labels"] = results["gt_bboxes_labels"][inside]
        flags = results.get("gt_ignore_flags")
        flags = np.zeros(len(original), dtype=bool) if flags is None else flags
        results["gt_ignore_flags"] = (flags | ~kept)[inside]
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, box_share={self.box_share}, min_visible={self.min_visible})"
