"""No module outside the training child's path imports torch or mmdet (nor mlflow, which the workers load only when
they track to it, nor ONNX Runtime, which only a detection child loads): the web process stays light."""

import json
import subprocess
import sys
from pathlib import Path

from tests.house.scan import PACKAGES

ROOT = Path(__file__).resolve().parents[1]
# Only these run inside the training child (or the checkpoint-inspection child); everything else may be imported
# by the web process or the django-q2 worker.
CHILD_ONLY = {
    "engine.child",
    "engine.checkpoints",
    "engine.progress_hook",
    "engine.vis_backend",
    "engine.tracking",
    "engine.transforms",
    "engine.onnx_graphs",  # the ONNX export's tracing: torch at module level, like the child's own modules
}

SCRIPT = r"""
import json, os, pkgutil, importlib, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dumpsite.settings")
import django
django.setup()
child_only = set(json.loads(sys.argv[1]))
imported = []
for package in json.loads(sys.argv[2]):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, prefix=package + "."):
        if info.name in child_only or ".migrations." in info.name:
            continue
        importlib.import_module(info.name)
        imported.append(info.name)
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
status = Client().get("/admin/login/").status_code
heavy = ("torch", "mmdet", "mmengine", "mmcv", "cv2", "mlflow", "tensorboard", "onnx", "onnxruntime")
heavy = sorted(m for m in heavy if m in sys.modules)
print(json.dumps({"imported": imported, "heavy": heavy, "status": status}))
"""


def test_importing_every_web_and_worker_module_loads_no_torch_or_mmdet():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(sorted(CHILD_ONLY)), json.dumps(PACKAGES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], report
    assert report["status"] == 200
    for name in (
        "training.services",
        "scheduler.tasks",
        "engine.supervisor",
        "engine.config",
        "core.api",
        "workers.services",
        "scheduler.queue",
        "training.management.commands.train",
        "models_registry.services",
        "datasets.coco_export",
    ):
        assert name in report["imported"]
