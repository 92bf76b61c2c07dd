"""A trained model's ONNX export end to end, on a real worker: queued (command line or API), exported and checked
against the model on its own validation split, kept with the model (download, card, bundle), then a detection run
on ONNX Runtime whose detections match the PyTorch run's over the same orthophoto."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from django.core.management import call_command

from datasets.models import DatasetImage, Orthophoto
from detection.models import Detection
from detection.params import SPECS
from detection.services import detection_run_create
from models_registry.models import TrainedModel
from tests.e2e.model_checks import api_client, predicted
from tests.e2e.waiting import finished
from training.models import TrainingRun


def pixel_iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def check_export_passes(model: TrainedModel, tmp_path: Path) -> dict:
    """Export through ``manage.py export_onnx --wait``; the gate passes, the file is the model's and runs in plain
    ONNX Runtime; returns the gate's report."""
    import onnxruntime

    tmp_path.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    call_command("export_onnx", str(model.pk), "--wait", stdout=out)
    said = out.getvalue()
    model.refresh_from_db()
    report = model.onnx_report
    assert report["passed"] and "Parity gate on" in said and "passed" in said, said
    assert report["matched"]["share"] == 1.0 and report["map50_difference"] <= 0.005, report
    assert model.source_run is not None and report["images"] == model.source_run.export_summary["val_images"], report
    run = TrainingRun.objects.get(pk=report["run"])
    assert run.kind == "onnx_export" and run.status == "succeeded" and run.progress_percent == 100.0
    assert run.stop_reason.startswith("Passed: mAP50") and run.evaluated_model_id == model.pk

    client = api_client(model.created_by)
    download = client.get(f"/api/trained-models/{model.pk}/download/", {"artifact": "onnx"})
    assert download.status_code == 200, download
    data = b"".join(download.streaming_content)
    assert hashlib.sha256(data).hexdigest() == download["X-Checksum-SHA256"] == model.onnx_sha256
    (tmp_path / "model.onnx").write_bytes(data)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["dumpsite.classes"]) == model.class_names
    assert [i.name for i in session.get_inputs()] == ["image", "image_size", "scale_factor"]
    card = client.get(f"/api/trained-models/{model.pk}/card/").json()
    assert card["onnx"]["passed"] and card["files"]["model.onnx"]["sha256"] == model.onnx_sha256
    markdown = client.get(f"/api/trained-models/{model.pk}/download/", {"artifact": "card"}).content.decode()
    assert "## ONNX export (parity gate on the validation split)" in markdown and "onnxruntime" in markdown
    shown = client.get(f"/api/trained-models/{model.pk}/").json()
    assert shown["onnx_sha256"] == model.onnx_sha256 and shown["onnx_report"]["passed"]

    # A predict check on ONNX Runtime finds what the PyTorch one finds.
    first = DatasetImage.objects.filter(dataset=model.dataset).order_by("id").first()
    assert first is not None
    theirs = predicted(client, model, Path(first.image.path))["result"]["boxes"]
    ours = predicted(client, model, Path(first.image.path), engine="onnxruntime")
    assert ours["status"] == "succeeded" and ours["engine"] == "onnxruntime", ours
    assert len(ours["result"]["boxes"]) == len(theirs) and theirs, (theirs, ours)
    for a in theirs:
        same = [b for b in ours["result"]["boxes"] if b["class_name"] == a["class_name"]]
        best = max(same, key=lambda b: pixel_iou(a["bbox"], b["bbox"]))
        assert pixel_iou(a["bbox"], best["bbox"]) >= 0.99 and abs(a["score"] - best["score"]) <= 1e-3, (a, best)
    # The command line's batch path on ONNX Runtime: the same boxes as the worker's.
    printed, written = io.StringIO(), tmp_path / "predicted.json"
    call_command(
        "predict", str(model.pk), first.image.path, "--out", str(written), "--engine", "onnxruntime", stdout=printed
    )
    assert json.loads(written.read_text())["images"][0]["boxes"] == ours["result"]["boxes"], printed.getvalue()
    assert "onnxruntime" in printed.getvalue()
    return report


def check_detection_on_onnx_runtime(model: TrainedModel, reference: TrainingRun, *, found: bool = True) -> TrainingRun:
    """The PyTorch detection run ``reference`` again on ONNX Runtime: the same detections (IoU >= 0.99, scores
    within 1e-3), the same merge and outputs; ``found``: the reference found something."""
    params = {k: v for k, v in reference.parameters.items() if k in SPECS or k == "classes"}
    run = detection_run_create(
        model=model,
        orthophotos=[Orthophoto.objects.get(pk=pk) for pk in reference.parameters["orthophotos"]],
        parameters={**params, "engine": "onnxruntime"},
        name="on ONNX Runtime",
        created_by=reference.created_by,
    )
    run = finished(run.pk)
    assert run.status == "succeeded", f"{run.error_message}\n{run.log_tail[-3000:]}"
    assert run.parameters["engine"] == "onnxruntime" and run.export_summary["windows"] > 0
    theirs = list(Detection.objects.filter(run=reference).order_by("-score"))
    ours = list(Detection.objects.filter(run=run).order_by("-score"))
    assert len(ours) == len(theirs) and (bool(theirs) or not found), ([d.pixel_box for d in theirs], ours)
    for a in theirs:
        best = max(ours, key=lambda b: pixel_iou(a.pixel_box, b.pixel_box) if b.label == a.label else -1)
        assert pixel_iou(a.pixel_box, best.pixel_box) >= 0.99 and abs(a.score - best.score) <= 1e-3, (a, best)
        assert a.ignored == best.ignored and a.merged == best.merged
    return run


def check_two_stage_export(model: TrainedModel, operator, tmp_path: Path) -> None:
    """A Faster R-CNN's export passes the gate, and a detection run of it on ONNX Runtime over a small orthophoto
    finds what the PyTorch run finds (this barely trained model may find nothing at the default threshold: then
    both find nothing)."""
    from datasets.orthophotos import orthophoto_store
    from tests.detection.scenes import scene, write_geotiff

    report = check_export_passes(model, tmp_path)
    assert report["matched"]["total"] > 0 and report["seconds_per_image"]["onnxruntime"] > 0, report
    picture = scene(300, 260, [(60, 70, 50, 46), (190, 150, 48, 52)], seed=17)
    geotransform = [500_000.0, 0.1, 0.0, 5e6, 0.0, -0.1]
    path = write_geotiff(tmp_path / "frcnn.tif", picture.pixels, srid=32633, geotransform=geotransform)
    assert model.dataset is not None
    ortho = orthophoto_store(dataset=model.dataset, source=path, name="frcnn.tif", created_by=operator)
    reference = detection_run_create(
        model=model, orthophotos=[ortho], parameters={"tile_size": 128}, name="PyTorch", created_by=operator
    )
    reference = finished(reference.pk)
    assert reference.status == "succeeded", reference.error_message
    check_detection_on_onnx_runtime(model, reference, found=False)
