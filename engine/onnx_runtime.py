"""A model's ONNX export run by ONNX Runtime on the CPU, with the test pipeline's resize done here (OpenCV, as
mmcv's ``Resize`` does it): no torch and no MMDetection, so a detection child on a CPU server starts in a fraction
of the time and memory. The file carries what it needs in its metadata (``dumpsite.preprocess``,
``dumpsite.classes``), written by ``engine.onnx_export``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

PREPROCESS_KEY = "dumpsite.preprocess"
CLASSES_KEY = "dumpsite.classes"


def preprocess_spec(test_pipeline: list[dict], preprocessor: dict) -> dict:
    """What the host does before the graph, from the model's test pipeline and data preprocessor: the resize
    (``Resize`` with a scale; the platform's ``DumpsiteRescale`` is 1 on windows and checks, which carry no ground
    resolution), the size divisor and the padding colour (the mean: 0 once normalised, as MMDetection pads)."""
    resize = None
    for step in test_pipeline:
        kind = step.get("type")
        if kind in ("LoadImageFromFile", "mmdet.LoadImageFromNDArray", "LoadAnnotations", "PackDetInputs"):
            continue
        if kind == "DumpsiteRescale" or (kind == "Resize" and step.get("scale") is None):
            if kind == "Resize" and float(step.get("scale_factor", 1.0)) != 1.0:
                raise ValueError("no ONNX export for a test pipeline that resizes by a factor")
            continue
        if kind == "Resize":
            resize = {"scale": [int(v) for v in step["scale"]], "keep_ratio": bool(step.get("keep_ratio", False))}
            continue
        raise ValueError(f"no ONNX export for the test pipeline step {kind}")
    mean = [float(v) for v in preprocessor.get("mean") or [0.0, 0.0, 0.0]]
    flip = bool(preprocessor.get("bgr_to_rgb") or preprocessor.get("rgb_to_bgr"))
    return {
        "resize": resize,
        "size_divisor": int(preprocessor.get("pad_size_divisor") or 1),
        # the graph takes BGR as loaded and flips it where the model wants RGB: pad in the order it is given
        "pad_value": mean[::-1] if flip else mean,
    }


def resized_shape(width: int, height: int, resize: dict | None) -> tuple[int, int]:
    """(width, height) after mmcv's ``Resize``: with keep_ratio, ``rescale_size``'s factor and rounding."""
    if resize is None:
        return width, height
    scale = resize["scale"]
    if not resize["keep_ratio"]:
        return int(scale[0]), int(scale[1])
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def read_image(path: Path) -> np.ndarray:
    """A picture as MMDetection's ``LoadImageFromFile`` gives it: BGR uint8, EXIF orientation applied."""
    # OpenCV: the decoder mmcv uses (cv2, IMREAD_COLOR), here without mmcv
    import cv2

    image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path.name}: not a picture OpenCV can decode")
    return image


def prepare(image: np.ndarray, spec: dict) -> dict[str, np.ndarray]:
    """The graph's inputs for one BGR uint8 image (H, W, 3)."""
    # OpenCV: the resize mmcv's Resize uses (bilinear), here without mmcv (which imports torch)
    import cv2

    height, width = image.shape[:2]
    new_w, new_h = resized_shape(width, height, spec["resize"])
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    div = spec["size_divisor"]
    padded = np.empty((-(-new_h // div) * div, -(-new_w // div) * div, 3), np.float32)
    padded[:] = np.asarray(spec["pad_value"], np.float32)
    padded[:new_h, :new_w] = image
    return {
        "image": np.ascontiguousarray(padded.transpose(2, 0, 1)[None]),
        "image_size": np.array([new_h, new_w], np.float32),
        "scale_factor": np.array([new_w / width, new_h / height], np.float32),
    }


class OnnxDetector:
    """An exported model in an ONNX Runtime session on the CPU; called like ``engine.detect.Batcher`` (BGR uint8
    arrays in, per image (boxes, scores, labels) lists out, boxes in the image's own pixels; pictures of one size
    in one batch, as the PyTorch model takes them)."""

    device = "cpu"

    def __init__(self, path: str, threads: int | None = None):
        # ONNX Runtime loads only in a child process, never in the web process
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or 0)  # 0: one per core
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if PREPROCESS_KEY not in meta:
            raise ValueError("this ONNX file was not exported by the platform (no preprocessing in its metadata)")
        self.spec = json.loads(meta[PREPROCESS_KEY])
        self.classes = json.loads(meta.get(CLASSES_KEY, "[]"))

    def detect(self, image: np.ndarray) -> tuple[list, list, list]:
        return self.batch([image])[0]

    def batch(self, images: list[np.ndarray]) -> list[tuple[list, list, list]]:
        """Pictures of one size in one run of the graph."""
        feeds = [prepare(image, self.spec) for image in images]
        feed = {**feeds[0], "image": np.concatenate([f["image"] for f in feeds])}
        boxes, scores, labels, rows = self.session.run(None, feed)
        out = []
        for k in range(len(images)):
            mine = rows == k
            out.append((boxes[mine].tolist(), scores[mine].tolist(), [int(v) for v in labels[mine]]))
        return out

    def __call__(self, images: list[Any]) -> list[tuple[list, list, list]]:
        """Each run of pictures of one size (a detection's windows are) in one batch."""
        out: list[tuple[list, list, list]] = []
        start = 0
        for end in range(1, len(images) + 1):
            if end == len(images) or images[end].shape != images[start].shape:
                out.extend(self.batch(images[start:end]))
                start = end
        return out
