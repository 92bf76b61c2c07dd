"""The ONNX export of each preset behind the parity gate, in this process (the child's code, no worker): the graph
finds what the PyTorch model finds on the validation pictures and on pictures of other sizes; an export with a
wrong normalisation fails the gate and keeps no file; the runtime side imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.onnx_export import OnnxExportJob, export_onnx
from engine.parity import match
from engine.processes import PROJECT_ROOT

CLASSES = ["waste_pile", "tyres"]


def saved_model(tmp_path: Path, architecture: str, scale: int) -> tuple[str, str]:
    """A preset's model (random weights, its class scores raised so that it detects plenty) saved as the registry
    stores one: the config as JSON (its test resize at ``scale`` to keep the test fast) and a weights-only
    checkpoint with its class names."""
    import torch

    from engine.inspect import preset_config
    from tests.zoo import build_model

    cfg = preset_config(architecture, len(CLASSES))
    for step in cfg["test_dataloader"]["dataset"]["pipeline"]:
        if step["type"] == "Resize":
            step["scale"] = [scale, scale]
    model = build_model(architecture, len(CLASSES), seed=1)
    with torch.no_grad():
        if hasattr(model, "roi_head"):
            model.roi_head.bbox_head.fc_cls.bias[: len(CLASSES)] += 3.0
            model.rpn_head.rpn_cls.bias += 2.0
        else:
            model.bbox_head.retina_cls.bias += 3.0
    config, checkpoint = tmp_path / "config.json", tmp_path / "model.pth"
    config.write_text(json.dumps(cfg))
    torch.save({"state_dict": model.state_dict(), "meta": {"dataset_meta": {"classes": CLASSES}}}, checkpoint)
    return str(config), str(checkpoint)


def pictures(tmp_path: Path, sizes: list[tuple[int, int]]) -> Path:
    """Validation pictures (JPEG, sizes (w, h)) with a few boxes, as a COCO document in the model's classes."""
    import cv2

    rng = np.random.default_rng(4)
    images, annotations = [], []
    for index, (w, h) in enumerate(sizes, start=1):
        img = (rng.random((h, w, 3)) * 120).astype(np.uint8)
        x, y = int(w * 0.2), int(h * 0.3)
        cv2.rectangle(img, (x, y), (x + w // 4, y + h // 5), (30, 180, 40), -1)
        cv2.imwrite(str(tmp_path / f"{index}.jpg"), img)
        images.append({"id": index, "file_name": f"{index}.jpg", "width": w, "height": h})
        annotations.append(
            {"id": index, "image_id": index, "category_id": 1, "bbox": [x, y, w // 4, h // 5], "area": 1, "iscrowd": 0}
        )
    doc = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": CLASSES[0]}]}
    doc["categories"].append({"id": 2, "name": CLASSES[1]})
    (tmp_path / "val.json").write_text(json.dumps(doc))
    return tmp_path / "val.json"


def job(tmp_path: Path, config: str, checkpoint: str, gt: Path) -> OnnxExportJob:
    return OnnxExportJob(
        config_file=config,
        checkpoint=checkpoint,
        classes=CLASSES,
        gt_file=str(gt),
        image_root=str(gt.parent),
        out_file=str(tmp_path / "model.onnx"),
        events_file=str(tmp_path / "events.jsonl"),
        result_file=str(tmp_path / "report.json"),
        threads=2,
    )


@pytest.mark.parametrize(("architecture", "scale"), [("retinanet_r18_tiny", 256), ("faster_rcnn_r50_fpn_small", 320)])
def test_each_preset_exports_and_passes_the_gate(tmp_path, architecture, scale):
    from engine.detect import Batcher
    from engine.onnx_runtime import OnnxDetector

    config, checkpoint = saved_model(tmp_path, architecture, scale)
    gt = pictures(tmp_path, [(300, 220), (256, 256)])
    events = []
    report = export_onnx(job(tmp_path, config, checkpoint, gt), lambda event, **p: events.append((event, p)))

    assert report["passed"], report
    assert report["failures"] == [] and report["images"] == 2
    assert report["matched"]["total"] >= 10 and report["matched"]["share"] == 1.0, report["matched"]
    assert report["map50_difference"] is not None and report["map50_difference"] <= 0.005
    assert report["seconds_per_image"]["pytorch"] > 0 and report["seconds_per_image"]["onnxruntime"] > 0
    assert report["threads"] == 2 and report["opset"] == 17
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert Path(tmp_path / "model.onnx").is_file() and not Path(tmp_path / "model.onnx.tmp").exists()
    assert events[0][0] == "start" and events[-1][1]["iter"] == events[-1][1]["max_iters"] == 5

    # The file runs by itself on pictures of other sizes and shapes than it was traced on, and still matches. (The
    # random weights score every box alike: the tail near MMDetection's per-level top-k cut is a tie that float
    # rounding decides either way, so the 20 best are compared.)
    onnx, torch_model = OnnxDetector(str(tmp_path / "model.onnx"), threads=2), Batcher(config, checkpoint, "cpu")
    assert onnx.classes == CLASSES
    rng = np.random.default_rng(9)
    for h, w in [(1000, 1000), (90, 700), (700, 90), (40, 40)]:
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        reference, candidate = torch_model([img])[0], onnx([img])[0]
        assert len(reference[1]) >= 20, (h, w)
        assert match(reference, candidate, sorted(reference[1])[-20])[0] == 20, (h, w)
    # A batch of windows of one size (as a detection run sends them) in one run: each its own detections.
    batch = [(rng.random((200, 300, 3)) * 255).astype(np.uint8) for _ in range(3)]
    for reference, candidate in zip(torch_model(batch), onnx(batch), strict=True):
        assert match(reference, candidate, sorted(reference[1])[-20])[0] == 20


def test_a_wrong_normalisation_fails_the_gate_and_keeps_no_file(tmp_path, monkeypatch):
    from engine import onnx_graphs

    config, checkpoint = saved_model(tmp_path, "retinanet_r18_tiny", 256)
    gt = pictures(tmp_path, [(256, 256), (300, 200)])
    right = onnx_graphs.Normalise.forward
    monkeypatch.setattr(onnx_graphs.Normalise, "forward", lambda self, image: right(self, image * 1.1))
    report = export_onnx(job(tmp_path, config, checkpoint, gt), lambda event, **p: None)

    assert not report["passed"]
    assert report["matched"]["share"] < 0.5, report["matched"]
    assert any("have no ONNX match" in f for f in report["failures"]), report["failures"]
    worst = report["worst_images"][0]
    assert worst["unmatched"] and {"box", "score", "nearest_iou"} <= set(worst["unmatched"][0])
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "model.onnx.tmp").exists()


def test_running_an_export_imports_no_torch():
    code = "import sys, engine.onnx_runtime, engine.parity; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT).returncode == 0
