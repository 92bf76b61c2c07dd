"""Run a registered model on images in a child process: ``python -m engine.predict JOB_FILE``.

The same isolation as training: torch and mmdet never enter a Django process. The job (JSON) names the model's
stored config and checkpoint (or its ONNX export, ``onnx``, run by ONNX Runtime), the images, a score threshold and
where to write. The child loads the checkpoint weights-only, detects, writes ``out`` (JSON: per image its size and
boxes with class names and scores) and, where asked, a preview image with the boxes drawn. Exit status 0 means
``out`` was written. ``Loaded`` is shared with the warm child (``engine.warm``), which keeps models between jobs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .loading import load_json_config
from .processes import PROJECT_ROOT

# Distinct, readable colours for boxes of up to 10 classes (then they repeat).
PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]


def draw_preview(image_path: str, boxes: list[dict], out_path: str, max_side: int = 1600) -> None:
    """The image with its boxes and labels drawn, scaled to at most ``max_side`` pixels (JPEG)."""
    # Pillow loads only where a picture is drawn
    from PIL import Image, ImageDraw

    with Image.open(image_path) as opened:
        img = opened.convert("RGB")
        scale = min(1.0, max_side / max(img.size))
        if scale < 1.0:
            img = img.resize((round(img.width * scale), round(img.height * scale)))
        draw = ImageDraw.Draw(img)
        width = max(2, round(max(img.size) / 400))
        for box in boxes:
            colour = PALETTE[box["label"] % len(PALETTE)]
            x1, y1, x2, y2 = (v * scale for v in box["bbox"])
            draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
            text = f"{box['class_name']} {box['score']:.2f}"
            left, top, right, bottom = draw.textbbox((x1, y1), text)
            lift = bottom - top + 4
            draw.rectangle([x1, y1 - lift, x1 + right - left + 6, y1], fill=colour)
            draw.text((x1 + 3, y1 - lift + 1), text, fill=(0, 0, 0))
        img.save(out_path, "JPEG", quality=88)


class Loaded:
    """A model loaded for predict checks: the checkpoint in PyTorch (weights-only), or its ONNX export in ONNX
    Runtime where the job names one (``onnx``). ``run(job)`` detects on the job's images."""

    def __init__(self, job: dict):
        started = time.monotonic()
        self.onnx = bool(job.get("onnx"))
        if self.onnx:
            # ONNX Runtime loads only where this runs (a child process), never on import
            from .onnx_runtime import OnnxDetector

            self.detector: Any = OnnxDetector(job["onnx"])
            self.classes, self.device = list(self.detector.classes), "cpu"
        else:
            # torch / MMDetection load only where this runs (a child process), never on import
            import torch
            from mmdet.apis import init_detector

            # torch / MMDetection load only where this runs (a child process), never on import
            from .checkpoints import install_safe_globals

            install_safe_globals()
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
            self.detector = init_detector(load_json_config(job["config"]), job["checkpoint"], device=self.device)
            self.classes = list(self.detector.dataset_meta.get("classes") or [])
        self.load_seconds = round(time.monotonic() - started, 3)

    def detect(self, path: str) -> tuple[list, list, list, int, int]:
        """Boxes, scores and labels of one picture, and its width and height."""
        if self.onnx:
            # ONNX Runtime's side loads only where this runs (a child process), never on import
            from .onnx_runtime import read_image

            image = read_image(Path(path))
            boxes, scores, labels = self.detector.detect(image)
            return boxes, scores, labels, image.shape[1], image.shape[0]
        # MMDetection loads only where this runs (a child process), never on import
        from mmdet.apis import inference_detector

        sample = inference_detector(self.detector, path)
        pred = sample.pred_instances
        height, width = sample.metainfo["ori_shape"][:2]
        bboxes, scores, labels = pred.bboxes.cpu().tolist(), pred.scores.cpu().tolist(), pred.labels.cpu().tolist()
        return bboxes, scores, labels, width, height

    def run(self, job: dict) -> dict:
        started = time.monotonic()
        threshold = float(job.get("score_threshold", 0.3))
        images = []
        for item in job["images"]:
            bboxes, scores, labels, width, height = self.detect(item["path"])
            boxes = [
                {
                    "label": int(label),
                    "class_name": self.classes[label] if label < len(self.classes) else str(label),
                    "score": round(float(score), 4),
                    "bbox": [round(float(v), 1) for v in bbox],
                }
                for bbox, score, label in zip(bboxes, scores, labels, strict=True)
                if score >= threshold
            ]
            entry = {"name": item.get("name") or Path(item["path"]).name, "width": width, "height": height}
            if item.get("preview"):
                draw_preview(item["path"], boxes, item["preview"])
            images.append({**entry, "boxes": boxes})
        return {
            "classes": self.classes,
            "score_threshold": threshold,
            "device": self.device,
            "engine": "onnxruntime" if self.onnx else "pytorch",
            "images": images,
            "seconds": round(time.monotonic() - started, 3),
        }


def predict(job: dict) -> dict:
    """Load the job's model and run it on the job's images (a process of its own: loading is part of its time)."""
    loaded = Loaded(job)
    result = loaded.run(job)
    return {**result, "seconds": round(result["seconds"] + loaded.load_seconds, 3)}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m engine.predict JOB_FILE", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    try:
        result = predict(job)
    except Exception as exc:  # noqa: BLE001 - every failure is reported as one line
        traceback.print_exc()
        text = str(exc).strip().splitlines()
        Path(job["out"]).write_text(
            json.dumps({"error": f"{type(exc).__name__}: {text[0] if text else ''}"[:2000]}), encoding="utf-8"
        )
        return 1
    tmp = Path(job["out"] + ".tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    tmp.replace(job["out"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))


class PredictionError(RuntimeError):
    """The model could not run on the images; the message says why in one line."""


def run_prediction(job: dict, job_file: Path, *, timeout: float, env: dict | None = None) -> dict:
    """Run the prediction child on ``job`` and return its result, or raise PredictionError with the reason."""

    out = Path(job["out"])
    out.unlink(missing_ok=True)
    job_file.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "engine.predict", str(job_file)],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise PredictionError(f"the prediction took longer than {timeout:.0f} s and was stopped") from None
    try:
        result = json.loads(out.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise PredictionError(f"the prediction process failed: {last}") from None
    if proc.returncode != 0 or "error" in result:
        raise PredictionError(result.get("error") or f"exit status {proc.returncode}")
    return result
