"""A trained detector as one ONNX graph of standard operators: network, box decoding and NMS, so plain ONNX Runtime
runs it with no custom library (runs in the export child only: torch and MMDetection).

MMDeploy is not used: its last release (1.3.1) pins protobuf <= 3.20.2, which the pinned onnx (protobuf >= 6.31)
and the tracking stack cannot share, and its ONNX Runtime path for Faster R-CNN needs its own operator library.
Instead the model's own modules (backbone, neck, heads) are traced by ``torch.onnx.export`` (the TorchScript
exporter, dynamic height and width), and what MMDetection does after them in Python is written here again in
traceable form, step for step as MMDetection 3.3 does it (``BaseDenseHead._predict_by_feat_single``,
``RPNHead._bbox_post_process``, ``SingleRoIExtractor``, ``BBoxHead._predict_by_feat_single``, ``multiclass_nms``):
score filter and per-level top-k, ``DeltaXYWHBBoxCoder`` decoding clipped to the image, boxes scaled back to the
image as given, class-aware NMS as ONNX ``NonMaxSuppression``, RoI pooling as ONNX ``RoiAlign`` (half-pixel, as
mmcv's ``aligned=True``). The parity gate (``engine.onnx_export``) checks that the result finds what the model finds.

The graph's inputs: ``image`` (N, 3, H, W) float32 pixels of N pictures of one size, in the model's channel order
as loaded (BGR), already resized by the test pipeline and padded to the size divisor with the normalisation's mean
(so the padding is 0 after normalising, as MMDetection pads); ``image_size`` (2,) the resized pictures' (height,
width) before padding; ``scale_factor`` (2,) the resize's (w, h) factors. Outputs: ``boxes`` (K, 4) in the
pictures' pixels as given, ``scores`` (K,), ``labels`` (K,) int64 and ``batch_index`` (K,) int64, each picture's
detections together, best first. A batch is worth it on CPUs: four 256 px windows in one run cost 1.3 times less
per window than one at a time (measured with ONNX Runtime 1.31 on 2 threads).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, cast

import torch
from torch import Tensor, nn

OPSET = 17


class NonMaxSuppression(torch.autograd.Function):
    """Per-class NMS over (1, N, 4) boxes and (1, C, N) scores; (K, 3) selected [batch, class, box] indices, each
    class's boxes best first, as ONNX's ``NonMaxSuppression`` (which the export writes)."""

    @staticmethod
    def forward(
        ctx: Any, boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float, score_threshold: float
    ) -> Tensor:  # noqa: ARG004,E501
        # mmcv's compiled ops: the reference the traced graph is compared with, loaded where it runs
        from mmcv.ops import nms

        picked = []
        for cls in range(scores.shape[1]):
            cls_scores = scores[0, cls]
            idx = torch.nonzero(cls_scores > score_threshold).squeeze(1)
            if idx.numel() == 0:
                continue
            _, keep = nms(boxes[0, idx], cls_scores[idx], float(iou_threshold))
            keep = idx[keep][: int(max_per_class)]
            picked.append(torch.stack([torch.zeros_like(keep), torch.full_like(keep, cls), keep], dim=1))
        return torch.cat(picked) if picked else boxes.new_zeros((0, 3), dtype=torch.long)

    @staticmethod
    def symbolic(
        g: Any, boxes: Any, scores: Any, max_per_class: int, iou_threshold: float, score_threshold: float
    ) -> Any:  # noqa: E501
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([int(max_per_class)], dtype=torch.long)),
            g.op("Constant", value_t=torch.tensor([float(iou_threshold)], dtype=torch.float)),
            g.op("Constant", value_t=torch.tensor([float(score_threshold)], dtype=torch.float)),
        )


class RoiAlign(torch.autograd.Function):
    """mmcv's RoIAlign (average, ``aligned=True``) on one feature level, written as ONNX's ``RoiAlign`` with
    ``coordinate_transformation_mode='half_pixel'``."""

    @staticmethod
    def forward(
        ctx: Any, feat: Tensor, rois: Tensor, batch_index: Tensor, size: int, spatial_scale: float, sampling_ratio: int
    ) -> Tensor:  # noqa: ARG004,E501
        # mmcv's compiled ops: the reference the traced graph is compared with, loaded where it runs
        from mmcv.ops import roi_align

        five = torch.cat([batch_index.to(rois.dtype)[:, None], rois], dim=1)
        return roi_align(feat, five, (size, size), spatial_scale, sampling_ratio, "avg", True)

    @staticmethod
    def symbolic(
        g: Any, feat: Any, rois: Any, batch_index: Any, size: int, spatial_scale: float, sampling_ratio: int
    ) -> Any:  # noqa: E501
        return g.op(
            "RoiAlign",
            feat,
            rois,
            batch_index,
            mode_s="avg",
            output_height_i=size,
            output_width_i=size,
            sampling_ratio_i=sampling_ratio,
            spatial_scale_f=spatial_scale,
            coordinate_transformation_mode_s="half_pixel",
        )


def class_nms(
    boxes: Tensor, scores: Tensor, labels: Tensor, rows: Tensor, images: Tensor, num_classes: int, iou: float, keep: int
) -> Tensor:
    """MMDetection's ``batched_nms`` per image (class-aware; ``labels`` the classes, or RPN's levels; ``rows`` each
    box's image of the batch, ``images`` how many), then each image's best ``keep`` of what survived: indices into
    ``boxes``, by image, best first."""
    groups = rows * num_classes + labels
    one_hot = (groups[:, None] == arange(images * num_classes)[None, :]).to(scores.dtype)
    table = (one_hot * scores[:, None]).t()[None]  # (1, images x classes, N): a box scores only in its own group
    picked = NonMaxSuppression.apply(boxes[None], table, keep, iou, 0.0)[:, 2]
    return best_per_image(picked, scores, rows, images, keep)


def best_per_image(picked: Tensor, scores: Tensor, rows: Tensor, images: Tensor, keep: int) -> Tensor:
    """Of the ``picked`` boxes, each image's best ``keep``, by image, best first (scores in [0, 1])."""
    order = torch.argsort(rows[picked].to(scores.dtype) * 2 - scores[picked])
    picked = picked[order]
    mine = (rows[picked][:, None] == arange(images)[None, :]).long()
    rank = (mine.cumsum(0) * mine).sum(1) - 1  # the place of each box among its image's
    return picked[rank < keep]


def row_top_k(values: Tensor, k: int) -> Any:
    """Each row's best ``k`` (all of them where it is shorter), best first. The length is read as a tensor, so the
    exported graph takes it from the input at run time, not from the image it was traced on."""
    length = torch.clamp(torch._shape_as_tensor(values)[1], max=k)
    return torch.topk(values, cast(int, length), dim=1)  # a tensor: topk takes it, and the graph keeps it dynamic


def rows_of(values: Tensor) -> Tensor:
    """Each element's row (its image of the batch), shaped like the 2-d ``values``."""
    return (torch.ones_like(values[:, :1]).cumsum(0) - 1).long().expand_as(values)


def arange(count: Tensor) -> Tensor:
    """0 .. count - 1 for a count read at run time (a tensor: the graph keeps it dynamic)."""
    return torch.arange(cast(int, count))


def images_of(image: Tensor) -> Tensor:
    """How many images the batch holds, read at run time."""
    return torch._shape_as_tensor(image)[0]


def grid_anchors(feat: Tensor, base: Tensor, stride: int) -> Tensor:
    """A level's anchors as MMDetection's ``AnchorGenerator.grid_priors`` lays them out (row-major positions, each
    position's base anchors in turn), from the feature map's own (dynamic) height and width."""
    ys = torch.ones_like(feat[0, 0, :, 0]).cumsum(0) - 1
    xs = torch.ones_like(feat[0, 0, 0, :]).cumsum(0) - 1
    yy = (ys[:, None] + xs[None, :] * 0).reshape(-1) * stride
    xx = (xs[None, :] + ys[:, None] * 0).reshape(-1) * stride
    shifts = torch.stack([xx, yy, xx, yy], dim=1)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)


def decode(priors: Tensor, deltas: Tensor, stds: list[float], means: list[float], image_size: Tensor) -> Tensor:
    """``DeltaXYWHBBoxCoder.decode`` (no centre clamp), clipped to the image (height, width) as MMDetection does."""
    d = deltas * deltas.new_tensor(stds) + deltas.new_tensor(means)
    max_ratio = abs(math.log(16 / 1000))
    pxy = (priors[:, :2] + priors[:, 2:]) * 0.5
    pwh = priors[:, 2:] - priors[:, :2]
    gxy = pxy + pwh * d[:, :2]
    gwh = pwh * d[:, 2:].clamp(min=-max_ratio, max=max_ratio).exp()
    x1y1, x2y2 = gxy - gwh * 0.5, gxy + gwh * 0.5
    limit = torch.stack([image_size[1], image_size[0]])
    return torch.cat([torch.min(torch.clamp(x1y1, min=0), limit), torch.min(torch.clamp(x2y2, min=0), limit)], dim=1)


def coder(head: Any) -> tuple[list[float], list[float]]:
    c = head.bbox_coder
    if type(c).__name__ != "DeltaXYWHBBoxCoder" or getattr(c, "add_ctr_clamp", False):
        raise ValueError(f"no ONNX export for the box coder {type(c).__name__}")
    return [float(v) for v in c.stds], [float(v) for v in c.means]


class Normalise(nn.Module):
    """The data preprocessor's channel order and normalisation."""

    mean: Tensor
    std: Tensor

    def __init__(self, preprocessor: Any) -> None:
        super().__init__()
        self.register_buffer("mean", preprocessor.mean.detach().clone().view(1, -1, 1, 1))
        self.register_buffer("std", preprocessor.std.detach().clone().view(1, -1, 1, 1))
        self.flip = bool(preprocessor._channel_conversion)

    def forward(self, image: Tensor) -> Tensor:
        if self.flip:
            image = image[:, [2, 1, 0]]
        return (image - self.mean) / self.std


class RetinaGraph(nn.Module):
    """A one-stage detector with an anchor head (RetinaNet): ``BaseDenseHead._predict_by_feat_single`` with
    sigmoid scores, then ``_bbox_post_process``."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model, self.normalise = model, Normalise(model.data_preprocessor)
        head = model.bbox_head
        if not head.use_sigmoid_cls:
            raise ValueError("no ONNX export for a softmax dense head")
        self.cfg, self.num_classes = head.test_cfg, head.num_classes
        self.stds, self.means = coder(head)
        self.strides = [int(s[0]) for s in head.prior_generator.strides]
        for i, base in enumerate(head.prior_generator.base_anchors):
            self.register_buffer(f"base{i}", base.detach().clone())

    def forward(self, image: Tensor, image_size: Tensor, scale_factor: Tensor) -> tuple[Tensor, ...]:
        feats = self.model.extract_feat(self.normalise(image))
        cls_scores, bbox_preds = self.model.bbox_head(feats)
        nms_pre, thr = int(self.cfg.get("nms_pre", -1)), float(self.cfg.get("score_thr", 0))
        all_scores, all_labels, all_boxes, all_rows = [], [], [], []
        for i, (cls, reg) in enumerate(zip(cls_scores, bbox_preds, strict=True)):
            priors = grid_anchors(cls, getattr(self, f"base{i}"), self.strides[i])
            scores = cls.permute(0, 2, 3, 1).flatten(1).sigmoid()  # (N, positions x anchors x classes)
            deltas = reg.permute(0, 2, 3, 1).reshape(reg.shape[0], -1, 4)
            kept = torch.where(scores > thr, scores, torch.zeros_like(scores))
            best = row_top_k(kept, nms_pre if nms_pre > 0 else 10**9)
            valid = best.values > thr
            index, row = best.indices[valid], rows_of(best.values)[valid]
            anchor = torch.div(index, self.num_classes, rounding_mode="floor")
            moved = deltas.reshape(-1, 4)[row * torch._shape_as_tensor(deltas)[1] + anchor]
            all_scores.append(best.values[valid])
            all_labels.append(index - anchor * self.num_classes)
            all_boxes.append(decode(priors[anchor], moved, self.stds, self.means, image_size))
            all_rows.append(row)
        boxes = torch.cat(all_boxes) / scale_factor.repeat(2)[None]
        scores, labels, rows = torch.cat(all_scores), torch.cat(all_labels), torch.cat(all_rows)
        iou, most = float(self.cfg.nms.iou_threshold), int(self.cfg.max_per_img)
        keep = class_nms(boxes, scores, labels, rows, images_of(image), self.num_classes, iou, most)
        return boxes[keep], scores[keep], labels[keep], rows[keep]


class FasterRcnnGraph(nn.Module):
    """A two-stage detector (Faster R-CNN): the RPN's proposals (``RPNHead``), RoI features from the level each
    proposal maps to (``SingleRoIExtractor``), the box head's classes and boxes, ``multiclass_nms``."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model, self.normalise = model, Normalise(model.data_preprocessor)
        rpn, roi = model.rpn_head, model.roi_head
        if rpn.num_base_priors < 1 or not rpn.use_sigmoid_cls or roi.bbox_head.reg_class_agnostic:
            raise ValueError("no ONNX export for this two-stage head")
        self.rpn_cfg, self.rcnn_cfg = model.test_cfg.rpn, model.test_cfg.rcnn
        self.rpn_stds, self.rpn_means = coder(rpn)
        self.stds, self.means = coder(roi.bbox_head)
        self.strides = [int(s[0]) for s in rpn.prior_generator.strides]
        for i, base in enumerate(rpn.prior_generator.base_anchors):
            self.register_buffer(f"base{i}", base.detach().clone())
        extractor = roi.bbox_roi_extractor
        layer = extractor.roi_layers[0]
        if not layer.aligned or layer.pool_mode != "avg":
            raise ValueError("no ONNX export for RoIAlign other than aligned averages")
        self.roi_size, self.sampling = int(layer.output_size[0]), int(layer.sampling_ratio)
        self.roi_strides = [int(s) for s in extractor.featmap_strides]
        self.finest = float(extractor.finest_scale)
        self.num_classes = roi.bbox_head.num_classes

    def proposals(self, feats: list[Tensor], image_size: Tensor, images: Tensor) -> tuple[Tensor, Tensor]:
        """Each image's proposals and their image in the batch."""
        cls_scores, bbox_preds = self.model.rpn_head(feats)
        nms_pre = int(self.rpn_cfg.get("nms_pre", -1))
        all_scores, all_boxes, all_levels, all_rows = [], [], [], []
        for i, (cls, reg) in enumerate(zip(cls_scores, bbox_preds, strict=True)):
            priors = grid_anchors(cls, getattr(self, f"base{i}"), self.strides[i])
            scores = cls.permute(0, 2, 3, 1).flatten(1).sigmoid()  # (N, positions x anchors)
            deltas = reg.permute(0, 2, 3, 1).reshape(reg.shape[0], -1, 4)
            best = row_top_k(scores, nms_pre if nms_pre > 0 else 10**9)
            rows = rows_of(best.values).reshape(-1)
            index = best.indices.reshape(-1)
            moved = deltas.reshape(-1, 4)[rows * torch._shape_as_tensor(deltas)[1] + index]
            all_boxes.append(decode(priors[index], moved, self.rpn_stds, self.rpn_means, image_size))
            all_scores.append(best.values.reshape(-1))
            all_levels.append(torch.zeros_like(index) + i)
            all_rows.append(rows)
        boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
        levels, rows = torch.cat(all_levels), torch.cat(all_rows)
        min_size = float(self.rpn_cfg.get("min_bbox_size", -1))
        if min_size >= 0:  # too small: scored 0, which NMS drops
            wide = (boxes[:, 2] - boxes[:, 0] > min_size) & (boxes[:, 3] - boxes[:, 1] > min_size)
            scores = torch.where(wide, scores, torch.zeros_like(scores))
        iou, most = float(self.rpn_cfg.nms.iou_threshold), int(self.rpn_cfg.max_per_img)
        keep = class_nms(boxes, scores, levels, rows, images, len(cls_scores), iou, most)
        return boxes[keep], rows[keep]

    def roi_features(self, feats: list[Tensor], rois: Tensor, rows: Tensor) -> Tensor:
        """Each proposal pooled from the level its size maps to (``SingleRoIExtractor.map_roi_levels``): the
        proposals of each level pooled together, then put back in their order (pooling every proposal on every
        level and keeping one cost 2.5 times the whole box head, measured)."""
        scale = torch.sqrt((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1]))
        levels = torch.floor(torch.log2(scale / self.finest + 1e-6)).clamp(min=0, max=len(self.roi_strides) - 1)
        chosen, pooled = [], []
        for i, stride in enumerate(self.roi_strides):
            index = torch.nonzero(levels == i).squeeze(1)
            chosen.append(index)
            spatial = 1.0 / stride
            pooled.append(RoiAlign.apply(feats[i], rois[index], rows[index], self.roi_size, spatial, self.sampling))
        order = torch.argsort(torch.cat(chosen))  # the inverse of the levels' order: back to the proposals'
        return torch.cat(pooled)[order]

    def forward(self, image: Tensor, image_size: Tensor, scale_factor: Tensor) -> tuple[Tensor, ...]:
        feats = self.model.extract_feat(self.normalise(image))
        images = images_of(image)
        rois, roi_rows = self.proposals(feats, image_size, images)
        cls_score, bbox_pred = self.model.roi_head.bbox_head(self.roi_features(feats, rois, roi_rows))
        c = self.num_classes
        scores = torch.softmax(cls_score, dim=-1)[:, :c].reshape(-1)
        priors = rois[:, None, :].expand(-1, c, 4).reshape(-1, 4)
        rows = roi_rows[:, None].expand(-1, c).reshape(-1)
        boxes = decode(priors, bbox_pred.reshape(-1, 4), self.stds, self.means, image_size)
        boxes = boxes / scale_factor.repeat(2)[None]
        labels = (torch.zeros_like(cls_score[:, :c]).long() + torch.arange(c)[None, :]).reshape(-1)
        thr = float(self.rcnn_cfg.score_thr)
        scores = torch.where(scores > thr, scores, torch.zeros_like(scores))
        iou, most = float(self.rcnn_cfg.nms.iou_threshold), int(self.rcnn_cfg.max_per_img)
        keep = class_nms(boxes, scores, labels, rows, images, c, iou, most)
        return boxes[keep], scores[keep], labels[keep], rows[keep]


def graph_of(model: Any) -> nn.Module:
    if hasattr(model, "roi_head") and hasattr(model, "rpn_head"):
        return FasterRcnnGraph(model).eval()
    if hasattr(model, "bbox_head"):
        return RetinaGraph(model).eval()
    raise ValueError(f"no ONNX export for {type(model).__name__}")


def export_graph(model: Any, path: str, sample: tuple[Any, ...], metadata: dict[str, str]) -> None:
    """Trace ``model``'s graph on ``sample`` (image, image_size, scale_factor; a batch of two, so that no size of one
    is taken for a constant) and write it to ``path`` with ``metadata`` (the model's classes and how to feed it) in
    the file's metadata."""
    # onnx loads only in the export's child, never on import
    import onnx

    graph = graph_of(model)
    # The tracer warns of every Python branch on a tensor (the NMS reference implementation's, mmcv's asserts)
    # and of the exporter's deprecation: the graph is judged by the parity gate, not by the warnings.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            sample,
            path,
            dynamo=False,
            opset_version=OPSET,
            input_names=["image", "image_size", "scale_factor"],
            output_names=["boxes", "scores", "labels", "batch_index"],
            dynamic_axes={
                "image": {0: "n", 2: "height", 3: "width"},
                **{k: {0: "k"} for k in ("boxes", "scores", "labels", "batch_index")},
            },
        )
    proto = onnx.load(path)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
