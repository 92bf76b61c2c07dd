"""Inspect a checkpoint file in a child process: ``python -m training.engine.inspect PATH ARCHITECTURE``.

The file is loaded weights-only with the allow-list (see ``checkpoints``), in a separate process so that the
Django process never unpickles anything and never imports torch. Prints one JSON object: the parameter count,
the number of classes its head predicts (for known architectures) and the class names stored in its meta, if any.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Head weight -> number of classes, per preset.
_HEADS = {
    "retinanet_r18_tiny": ("bbox_head.retina_cls.weight", lambda shape, anchors=9: shape[0] // anchors),
    "faster_rcnn_r50_fpn": ("roi_head.bbox_head.fc_cls.weight", lambda shape: shape[0] - 1),
}


def inspect_checkpoint(path: str, architecture: str, timeout: float = 300) -> dict:
    """Run the inspection in a child process; return its report or raise ValueError with the reason."""
    proc = subprocess.run(
        [sys.executable, "-m", "training.engine.inspect", str(path), architecture],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise ValueError(f"checkpoint inspection failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}") from None
    if "error" in report:
        raise ValueError(report["error"])
    return report


def _inspect(path: str, architecture: str) -> dict:
    from .checkpoints import load_checkpoint, parameter_count

    ckpt = load_checkpoint(path)
    state = ckpt["state_dict"]
    report = {"parameter_count": parameter_count(state), "num_classes": None, "classes": None}
    head = _HEADS.get(architecture)
    if head is not None:
        key, count = head
        if key not in state:
            raise ValueError(f"not a {architecture} checkpoint: it has no {key}")
        report["num_classes"] = int(count(tuple(state[key].shape)))
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    classes = (meta.get("dataset_meta") or {}).get("classes") if isinstance(meta.get("dataset_meta"), dict) else None
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        report["classes"] = list(classes)
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(json.dumps({"error": "usage: python -m training.engine.inspect PATH ARCHITECTURE"}))
        return 2
    try:
        report = _inspect(argv[1], argv[2])
    except Exception as exc:  # noqa: BLE001 - any failure is a reason to refuse the file
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
