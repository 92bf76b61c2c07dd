"""Load a downloaded model the way production does: stock MMDetection in a fresh interpreter, with a clean
environment and no code of this project on its path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
from mmdet.apis import DetInferencer, init_detector

config, weights, image = sys.argv[1:4]
model = init_detector(config, weights, device="cpu")
inferencer = DetInferencer(model=config, weights=weights, device="cpu")
pred = inferencer(image, return_vis=False)["predictions"][0]
print(json.dumps({
    "classes": list(inferencer.model.dataset_meta["classes"]),
    "init_classes": list(model.dataset_meta["classes"]),
    "config_classes": list(model.cfg.test_dataloader.dataset.metainfo.classes),
    "labels": pred["labels"],
    "scores": pred["scores"],
    "bboxes": pred["bboxes"],
    "sys_path": sys.path,
    "modules": sorted(
        m for m in sys.modules if m.split(".")[0] in ("training", "datasets", "dumpsite", "models_registry")
    ),
}))
"""


def run_stock_mmdet(workdir: Path, config: Path, weights: Path, image: Path) -> dict:
    """Detect on ``image`` with ``DetInferencer`` (and ``init_detector``) in ``python -I`` from ``workdir``."""
    script = workdir / "stock_check.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "OMP_NUM_THREADS": "2", "LANG": "C.UTF-8"}
    proc = subprocess.run(
        [sys.executable, "-I", str(script), str(config), str(weights), str(image)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The interpreter's own site-packages may sit in the project's .venv; nothing else of the project may be there.
    ours = [
        p
        for p in result["sys_path"]
        if p and Path(p).resolve().is_relative_to(PROJECT) and not Path(p).resolve().is_relative_to(PROJECT / ".venv")
    ]
    assert not ours, result["sys_path"]
    assert result["modules"] == [], result["modules"]
    return result
