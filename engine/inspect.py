"""Inspect a checkpoint file in a child process: ``python -m engine.inspect PATH ARCHITECTURE``.

The file is loaded weights-only with the allow-list (see ``checkpoints``), in a separate process so that the
Django process never unpickles anything and never imports torch. Prints one JSON object: the parameter count,
the number of classes its head predicts, the class names stored in its meta (MMDetection 3's ``dataset_meta`` or
the 2.x model zoo's ``CLASSES``; COCO's names for an 80-class head without names), and the preset's config for
that many classes. A file whose tensors do not all fit the preset's model (another architecture) is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from .config import publishable_config, set_path
from .loading import resolve_base_config
from .pipelines import pipelines
from .presets import get_preset
from .processes import PROJECT_ROOT
from .supervisor import child_environment

# Head weight -> number of classes, per preset.
_HEADS: dict[str, tuple[str, Callable[[tuple[int, ...]], int]]] = {
    "retinanet_r18_tiny": ("bbox_head.retina_cls.weight", lambda shape: shape[0] // 9),  # 9 anchors a place
    "faster_rcnn_r50_fpn": ("roi_head.bbox_head.fc_cls.weight", lambda shape: shape[0] - 1),  # + background
}
_HEADS["faster_rcnn_r50_fpn_small"] = _HEADS["faster_rcnn_r50_fpn"]


def inspect_checkpoint(path: str, architecture: str, timeout: float = 90, extra_env: tuple[str, ...] = ()) -> dict:
    """Run the inspection in a child process; return its report or raise ValueError with the reason.

    The child gets the training child's minimal environment (``supervisor.child_environment``: no secret of the
    web process, no GPU) and ``timeout`` seconds, which the caller keeps below the web's own request time-out."""

    env = {**child_environment(extra_env), "CUDA_VISIBLE_DEVICES": ""}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "engine.inspect", str(path), architecture],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ValueError(f"the inspection took longer than {timeout:g} s (DUMPSITE_INSPECT_TIMEOUT)") from None
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise ValueError(f"checkpoint inspection failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}") from None
    if "error" in report:
        raise ValueError(report["error"])
    return report


def _class_names(meta: dict) -> tuple[list[str] | None, str | None]:
    """Class names stored in a checkpoint's meta: mmengine's ``dataset_meta.classes`` (MMDetection 3) or
    ``CLASSES`` (the 2.x model zoo's layout)."""
    dataset_meta: dict = meta["dataset_meta"] if isinstance(meta.get("dataset_meta"), dict) else {}
    for names, source in (
        (dataset_meta.get("classes"), "meta.dataset_meta.classes"),
        (meta.get("CLASSES"), "meta.CLASSES"),
    ):
        if isinstance(names, (list, tuple)) and names and all(isinstance(c, str) for c in names):
            return list(names), source
    return None, None


def preset_config(architecture: str, num_classes: int) -> dict:
    """The preset's full config for ``num_classes`` classes, as plain data (what a base model is stored with)."""
    # torch / MMDetection load only where this runs (a child process), never on import
    from mmengine.config import Config

    preset = get_preset(architecture)
    cfg = Config.fromfile(resolve_base_config(preset.base_config))
    model = json.loads(json.dumps(preset.model_overrides))
    for path in preset.num_classes_paths:
        set_path(model, path, num_classes)
    train, test = pipelines(preset.defaults["image_size"])
    cfg.merge_from_dict({"model": model})
    for split in ("train", "val", "test"):
        loader = cfg.get(f"{split}_dataloader")
        if loader and loader.get("dataset"):
            loader["dataset"]["pipeline"] = train if split == "train" else test
    data = json.loads(json.dumps(cfg.to_dict()))
    return publishable_config(data)


def _inspect(path: str, architecture: str) -> dict:
    # torch / MMDetection load only where this runs (a child process), never on import
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict

    # torch / MMDetection load only where this runs (a child process), never on import
    from .checkpoints import load_checkpoint, parameter_count
    from .device import library_versions
    from .transfer import TransferError, plan_transfer

    ckpt = load_checkpoint(path)
    state = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    report: dict[str, Any] = {
        "parameter_count": parameter_count(state),
        "num_classes": None,
        "classes": None,
        "class_source": None,
    }
    head = _HEADS.get(architecture)
    if head is None:
        raise ValueError(f"unknown architecture {architecture!r}")
    key, count = head
    if key not in state:
        raise ValueError(f"not a {architecture} checkpoint: it has no {key}")
    report["num_classes"] = int(count(tuple(state[key].shape)))
    meta: dict = ckpt["meta"] if isinstance(ckpt.get("meta"), dict) else {}
    report["classes"], report["class_source"] = _class_names(meta)

    # Does every tensor fit the preset's model? Build it for this class count and compare shapes.
    register_all_modules(init_default_scope=True)
    config = preset_config(architecture, report["num_classes"])
    model = MODELS.build(ConfigDict(config["model"]))

    try:
        plan = plan_transfer(
            {k: tuple(v.shape) for k, v in model.state_dict().items()},
            {k: tuple(v.shape) for k, v in state.items()},
            class_dependent=get_preset(architecture).class_dependent,
            new_classes=False,
        )
    except TransferError as exc:
        raise ValueError(f"not a {architecture} checkpoint: {exc}") from None
    if report["classes"] is None and report["num_classes"] == 80:
        # torch / MMDetection load only where this runs (a child process), never on import
        from mmdet.datasets import CocoDataset

        report["classes"], report["class_source"] = list(CocoDataset.METAINFO["classes"]), "COCO (80 classes)"
    report.update(tensors=plan["total"], unused_tensors=plan["unused_count"], config=config)
    report["versions"] = library_versions()
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(json.dumps({"error": "usage: python -m engine.inspect PATH ARCHITECTURE"}))
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
