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

The graph's inputs: ``image`` (1, 3, H, W) float32 pixels in the model's channel order as loaded (BGR), already
resized by the test pipeline and padded to the size divisor with the normalisation's mean (so the padding is 0
after normalising, as MMDetection pads); ``image_size`` (2,) the resized image's (height, width) before padding;
``scale_factor`` (2,) the resize's (w, h) factors. Outputs: ``boxes`` (K, 4) in the image's pixels as given,
``scores`` (K,), ``labels`` (K,) int64, best first.
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


def class_nms(boxes: Tensor, scores: Tensor, labels: Tensor, num_classes: int, iou: float, keep: int) -> Tensor:
    """MMDetection's ``batched_nms`` (class-aware; ``labels`` the classes, or RPN's levels) then the best ``keep``
    of what survived: indices into ``boxes``, best first."""
    one_hot = (labels[:, None] == torch.arange(num_classes, device=labels.device)[None, :]).to(scores.dtype)
    table = (one_hot * scores[:, None]).t()[None]  # (1, C, N): a box scores only in its own class
    picked = NonMaxSuppression.apply(boxes[None], table, keep, iou, 0.0)[:, 2]
    return picked[top_k(scores[picked], keep).indices]


def top_k(values: Tensor, k: int) -> Any:
    """The best ``k`` of a 1-d tensor (all of them where it is shorter), best first. The length is read as a tensor,
    so the exported graph takes it from the input at run time, not from the image it was traced on."""
    length = torch.clamp(torch._shape_as_tensor(values)[0], max=k)
    return torch.topk(values, cast(int, length))  # a tensor: topk takes it, and the graph keeps it dynamic


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

    def forward(self, image: Tensor, image_size: Tensor, scale_factor: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feats = self.model.extract_feat(self.normalise(image))
        cls_scores, bbox_preds = self.model.bbox_head(feats)
        nms_pre, thr = int(self.cfg.get("nms_pre", -1)), float(self.cfg.get("score_thr", 0))
        all_scores, all_labels, all_boxes = [], [], []
        for i, (cls, reg) in enumerate(zip(cls_scores, bbox_preds, strict=True)):
            priors = grid_anchors(cls, getattr(self, f"base{i}"), self.strides[i])
            scores = cls[0].permute(1, 2, 0).reshape(-1, self.num_classes).sigmoid()
            deltas = reg[0].permute(1, 2, 0).reshape(-1, 4)
            flat = torch.where(scores > thr, scores, torch.zeros_like(scores)).reshape(-1)
            best = top_k(flat, nms_pre if nms_pre > 0 else 10**9)
            valid = best.values > thr
            index = best.indices[valid]
            anchor = torch.div(index, self.num_classes, rounding_mode="floor")
            all_scores.append(best.values[valid])
            all_labels.append(index - anchor * self.num_classes)
            all_boxes.append(decode(priors[anchor], deltas[anchor], self.stds, self.means, image_size))
        boxes = torch.cat(all_boxes) / scale_factor.repeat(2)[None]
        scores, labels = torch.cat(all_scores), torch.cat(all_labels)
        keep = class_nms(
            boxes, scores, labels, self.num_classes, float(self.cfg.nms.iou_threshold), int(self.cfg.max_per_img)
        )
        return boxes[keep], scores[keep], labels[keep]


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

    def proposals(self, feats: list[Tensor], image_size: Tensor) -> Tensor:
        cls_scores, bbox_preds = self.model.rpn_head(feats)
        nms_pre = int(self.rpn_cfg.get("nms_pre", -1))
        all_scores, all_boxes, all_levels = [], [], []
        for i, (cls, reg) in enumerate(zip(cls_scores, bbox_preds, strict=True)):
            priors = grid_anchors(cls, getattr(self, f"base{i}"), self.strides[i])
            scores = cls[0].permute(1, 2, 0).reshape(-1).sigmoid()
            deltas = reg[0].permute(1, 2, 0).reshape(-1, 4)
            best = top_k(scores, nms_pre if nms_pre > 0 else 10**9)
            all_scores.append(best.values)
            picked, moved = priors[best.indices], deltas[best.indices]
            all_boxes.append(decode(picked, moved, self.rpn_stds, self.rpn_means, image_size))
            all_levels.append(torch.zeros_like(best.indices) + i)
        boxes, scores, levels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_levels)
        min_size = float(self.rpn_cfg.get("min_bbox_size", -1))
        if min_size >= 0:  # too small: scored 0, which NMS drops
            wide = (boxes[:, 2] - boxes[:, 0] > min_size) & (boxes[:, 3] - boxes[:, 1] > min_size)
            scores = torch.where(wide, scores, torch.zeros_like(scores))
        keep = class_nms(
            boxes, scores, levels, len(cls_scores), float(self.rpn_cfg.nms.iou_threshold), int(self.rpn_cfg.max_per_img)
        )
        return boxes[keep]

    def roi_features(self, feats: list[Tensor], rois: Tensor) -> Tensor:
        """Each proposal pooled from the level its size maps to (``SingleRoIExtractor.map_roi_levels``): the
        proposals of each level pooled together, then put back in their order (pooling every proposal on every
        level and keeping one cost 2.5 times the whole box head, measured)."""
        scale = torch.sqrt((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1]))
        levels = torch.floor(torch.log2(scale / self.finest + 1e-6)).clamp(min=0, max=len(self.roi_strides) - 1)
        chosen, pooled = [], []
        for i, stride in enumerate(self.roi_strides):
            index = torch.nonzero(levels == i).squeeze(1)
            chosen.append(index)
            batch = torch.zeros_like(index)
            pooled.append(RoiAlign.apply(feats[i], rois[index], batch, self.roi_size, 1.0 / stride, self.sampling))
        order = torch.argsort(torch.cat(chosen))  # the inverse of the levels' order: back to the proposals'
        return torch.cat(pooled)[order]

    def forward(self, image: Tensor, image_size: Tensor, scale_factor: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feats = self.model.extract_feat(self.normalise(image))
        rois = self.proposals(feats, image_size)
        cls_score, bbox_pred = self.model.roi_head.bbox_head(self.roi_features(feats, rois))
        c = self.num_classes
        scores = torch.softmax(cls_score, dim=-1)[:, :c].reshape(-1)
        priors = rois[:, None, :].expand(-1, c, 4).reshape(-1, 4)
        boxes = decode(priors, bbox_pred.reshape(-1, 4), self.stds, self.means, image_size)
        boxes = boxes / scale_factor.repeat(2)[None]
        labels = (torch.zeros_like(cls_score[:, :c]).long() + torch.arange(c)[None, :]).reshape(-1)
        thr = float(self.rcnn_cfg.score_thr)
        scores = torch.where(scores > thr, scores, torch.zeros_like(scores))
        iou, most = float(self.rcnn_cfg.nms.iou_threshold), int(self.rcnn_cfg.max_per_img)
        keep = class_nms(boxes, scores, labels, c, iou, most)
        return boxes[keep], scores[keep], labels[keep]


def graph_of(model: Any) -> nn.Module:
    if hasattr(model, "roi_head") and hasattr(model, "rpn_head"):
        return FasterRcnnGraph(model).eval()
    if hasattr(model, "bbox_head"):
        return RetinaGraph(model).eval()
    raise ValueError(f"no ONNX export for {type(model).__name__}")


def export_graph(model: Any, path: str, sample: tuple[Any, ...], metadata: dict[str, str]) -> None:
    """Trace ``model``'s graph on ``sample`` (image, image_size, scale_factor) and write it to ``path`` with
    ``metadata`` (the model's classes and how to feed it) in the file's metadata."""
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
            output_names=["boxes", "scores", "labels"],
            dynamic_axes={"image": {2: "height", 3: "width"}, **{k: {0: "k"} for k in ("boxes", "scores", "labels")}},
        )
    proto = onnx.load(path)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
