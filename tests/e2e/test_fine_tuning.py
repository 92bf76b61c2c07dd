"""End to end: a model-zoo Faster R-CNN (80 COCO classes, built locally in the zoo's layout) is registered,
fine-tuned by a real worker to a 2-class dataset, registered with its lineage, and what users download loads in
stock MMDetection."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from models_registry.models import TrainedModel
from tests.e2e.onnx_checks import check_two_stage_export
from tests.e2e.stock import run_stock_mmdet
from tests.e2e.test_training_pipeline import TRAIN_TIMEOUT, follow, tiles_dataset
from tests.zoo import make_zoo_checkpoint
from training.models import TrainingRun
from training.services import training_run_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FC_LAYERS = {
    "roi_head.bbox_head.fc_cls.weight": ([3, 1024], [81, 1024]),
    "roi_head.bbox_head.fc_cls.bias": ([3], [81]),
    "roi_head.bbox_head.fc_reg.weight": ([8, 1024], [320, 1024]),
    "roi_head.bbox_head.fc_reg.bias": ([8], [320]),
}


def test_model_zoo_faster_rcnn_fine_tunes_to_two_classes(worker, tmp_path):
    from django.contrib.auth import get_user_model
    from mmdet.datasets import CocoDataset

    from core.commands import ensure_operator

    operator = get_user_model().objects.get(username=ensure_operator())
    zoo = make_zoo_checkpoint(tmp_path / "faster_rcnn_r50_fpn_1x_coco.pth", "faster_rcnn_r50_fpn", layout="2.x")

    # 1. Registered from the command line, as an operator would with the file from the model zoo.
    out = io.StringIO()
    call_command(
        "register_base_model",
        str(zoo),
        "--name",
        "Faster R-CNN COCO (zoo layout)",
        "--architecture",
        "faster_rcnn_r50_fpn",
        stdout=out,
    )
    base = TrainedModel.objects.get(name="Faster R-CNN COCO (zoo layout)")
    assert base.class_names == list(CocoDataset.METAINFO["classes"]) and base.origin == "registered"
    assert "80 classes (from meta.CLASSES)" in out.getvalue() and "tensors fit the preset" in out.getvalue()
    assert base.library_versions["mmdet"] == "3.3.0"

    # 2. The plan is said before anything is queued.
    dataset = tiles_dataset("frcnn tiles", ["waste_pile", "construction_debris"], count=8, seed=11)
    out = io.StringIO()
    call_command("train", "--dataset", "frcnn tiles", "--base-model", str(base.pk), "--dry-run", stdout=out)
    said = out.getvalue()
    assert "predicts 80 ('person', 'bicycle'" in said and "roi_head.bbox_head.fc_cls, roi_head.bbox_head.fc_reg" in said
    assert "Nothing queued." in said and not TrainingRun.objects.exists()

    # 3. Fine-tuned by the worker: one short epoch on small images, on the CPU; and the small-object preset (the
    # same network with other anchors) from the same checkpoint, queued behind it.
    short = {
        "epochs": 1,
        "batch_size": 2,
        "image_size": 128,
        "warmup_iters": 5,
        "val_fraction": 0.25,
    }  # 6 training and 2 validation tiles
    run = training_run_create(
        dataset=dataset, base_model=base, parameters=short, name="zoo to waste", created_by=operator
    )
    small = training_run_create(
        dataset=dataset,
        base_model=base,
        architecture="faster_rcnn_r50_fpn_small",
        parameters=short,
        name="zoo to waste, small objects",
        created_by=operator,
    )
    assert run.weight_transfer["mode"] == "new_classes" and "applied" not in run.weight_transfer
    run, _ = follow(run.pk, TRAIN_TIMEOUT)
    assert run.status == "succeeded", f"{run.error_message}\n{run.log_tail[-3000:]}"
    applied = run.weight_transfer["applied"]
    assert {e["key"]: (e["shape"], e["base_shape"]) for e in applied["reinitialised"]} == FC_LAYERS
    assert applied["loaded_count"] == applied["total"] - 4 and applied["unused_count"] == 0
    assert {"backbone", "neck", "rpn_head", "roi_head.bbox_head"} <= set(applied["loaded_groups"])
    assert run.device.startswith("cpu (") and run.stop_reason == "Trained all 1 epochs."

    model = TrainedModel.objects.get(source_run=run)
    assert model.base_model == base and model.class_names == ["waste_pile", "construction_debris"]
    assert len(model.metrics_history) == 1 and model.bbox_mAP_50 is not None
    assert model.library_versions["torch"] and model.library_versions["mmcv"]

    # 4. The API shows the lineage and the run's record of the weights; the bundle loads in stock MMDetection.
    client = APIClient()
    client.force_authenticate(operator)
    lineage = client.get(f"/api/trained-models/{model.pk}/lineage/").json()
    assert [a["id"] for a in lineage["ancestors"]] == [base.pk]
    shown = client.get(f"/api/training-runs/{run.pk}/").json()
    assert shown["weight_transfer"]["applied"]["reinitialised"][0]["key"].startswith("roi_head.bbox_head.fc_")
    assert shown["device"] == run.device and shown["stop_reason"] == run.stop_reason
    response = client.get(f"/api/trained-models/{model.pk}/download/", {"artifact": "bundle"})
    assert response.status_code == 200
    bundle = tmp_path / "bundle"
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as zf:
        zf.extractall(bundle)
    folder = bundle / f"model-{model.pk}"
    card = json.loads((folder / "model_card.json").read_text())
    assert card["lineage"] == [{"id": base.pk, "name": base.name}] and card["classes"] == model.class_names
    assert card["training"]["weight_transfer"]["applied"]["reinitialised"] == applied["reinitialised"]
    image = next(iter(dataset.images.order_by("id"))).image.path
    stock = run_stock_mmdet(tmp_path, folder / "config.py", folder / "checkpoint.pth", image)
    assert stock["classes"] == stock["init_classes"] == stock["config_classes"] == model.class_names
    assert all(0 <= label < 2 for label in stock["labels"])

    # 5. The small-object preset trained from the same zoo checkpoint, with the same four layers renewed.
    small, _ = follow(small.pk, TRAIN_TIMEOUT)
    assert small.status == "succeeded", f"{small.error_message}\n{small.log_tail[-3000:]}"
    small_applied = small.weight_transfer["applied"]
    assert {e["key"] for e in small_applied["reinitialised"]} == set(FC_LAYERS)
    assert small_applied["loaded_count"] == applied["loaded_count"]
    small_model = TrainedModel.objects.get(source_run=small)
    assert small_model.architecture == "faster_rcnn_r50_fpn_small" and small_model.base_model == base
    stored = json.loads(Path(small_model.config.path).read_text())
    assert stored["model"]["rpn_head"]["anchor_generator"]["scales"] == [4]

    # 6. Its ONNX export passes the parity gate, and detects on ONNX Runtime what it detects in PyTorch.
    check_two_stage_export(small_model, operator, tmp_path / "onnx")
