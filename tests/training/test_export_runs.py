"""ONNX export runs without a worker: what is refused and how, and what the worker keeps of a passing and of a
failing gate (the child's report written by hand: the child itself is tested in tests/engine and end to end)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.errors import ApplicationError
from core.storage import local_file
from detection.services import detection_run_create
from engine.onnx_export import OnnxExportJob
from models_registry.models import TrainedModel
from models_registry.predictions import prediction_create
from tests.conftest import jpeg_bytes
from training.execution.export import store_and_finish
from training.models import TrainingManifest, TrainingRun
from training.services.export_runs import onnx_export_create

pytestmark = pytest.mark.django_db


def test_an_export_is_queued_as_a_run_of_the_model(world):
    run = onnx_export_create(model=world.model, created_by=world.users["owner"])
    assert run.kind == "onnx_export" and run.status == "queued" and run.evaluated_model == world.model
    assert run.dataset == world.dataset and run.name == f"ONNX export of {world.model.name}"


def test_what_is_refused_with_its_reason(world):
    with pytest.raises(ApplicationError, match="no validation split of its own"):
        onnx_export_create(model=world.published, created_by=world.users["admin"])
    with pytest.raises(ApplicationError, match="No such model"):
        onnx_export_create(model=world.model, created_by=world.users["other_trainer"])
    with pytest.raises(Exception, match="may not start runs"):
        onnx_export_create(model=world.published, created_by=world.users["viewer"])
    TrainingManifest.objects.filter(run=world.run).update(validation_coco={"images": [], "annotations": []})
    with pytest.raises(ApplicationError, match="validation split is empty"):
        onnx_export_create(model=world.model, created_by=world.users["owner"])
    assert not TrainingRun.objects.filter(kind="onnx_export").exists()


def test_the_command_says_why_in_one_line(world):
    with pytest.raises(CommandError, match="no validation split of its own"):
        call_command("export_onnx", str(world.published.pk), "--user", "admin", stdout=io.StringIO())
    out = io.StringIO()
    call_command("export_onnx", str(world.model.pk), "--user", "owner", stdout=out)
    assert f"Queued ONNX export #{TrainingRun.objects.get(kind='onnx_export').pk}" in out.getvalue()


def finish(world, tmp_path, report: dict) -> TrainingRun:
    """An export run the worker took, ended with the child's ``report`` (and a file where it passed)."""
    run = onnx_export_create(model=world.model, created_by=world.users["owner"])
    TrainingRun.objects.filter(pk=run.pk).update(status="running", export_summary={"recorded before": "kept"})
    run.refresh_from_db()
    work = tmp_path / f"run-{run.pk}"
    work.mkdir()
    if report["passed"]:
        (work / "model.onnx").write_bytes(b"an onnx graph " + str(run.pk).encode())
    (work / "report.json").write_text(json.dumps(report))
    job = OnnxExportJob(
        config_file="c",
        checkpoint="k",
        classes=[],
        gt_file="g",
        image_root=".",
        out_file=str(work / "model.onnx"),
        events_file=str(work / "events.jsonl"),
        result_file=str(work / "report.json"),
    )
    store_and_finish(run, job=job, log_tail="")
    run.refresh_from_db()
    return run


REPORT = {
    "passed": True,
    "failures": [],
    "images": 3,
    "map50": {"pytorch": 0.81, "onnxruntime": 0.81},
    "map50_difference": 0.0,
    "matched": {"count": 12, "total": 12, "share": 1.0},
    "seconds_per_image": {"pytorch": 0.2, "onnxruntime": 0.1},
    "speedup": 2.0,
    "threads": 2,
    "opset": 17,
}


def test_a_passing_gate_keeps_the_file_a_failing_one_removes_it(world, tmp_path, django_capture_on_commit_callbacks):
    run = finish(world, tmp_path, REPORT)
    model = TrainedModel.objects.get(pk=world.model.pk)
    assert run.status == "succeeded" and run.stop_reason.startswith("Passed: mAP50 0.81 (PyTorch)")
    assert model.onnx.name == f"models/{model.artifact_key}/model.onnx" and len(model.onnx_sha256) == 64
    assert model.onnx_report["run"] == run.pk and local_file(model.onnx.name).read_bytes().startswith(b"an onnx")
    assert run.export_summary["gate"]["passed"] and run.export_summary["recorded before"] == "kept"

    failing = {**REPORT, "passed": False, "failures": ["3 of 12 PyTorch detections at score >= 0.3 have no ONNX match"]}
    failing["matched"] = {"count": 9, "total": 12, "share": 0.75}
    with django_capture_on_commit_callbacks(execute=True):
        run = finish(world, tmp_path, failing)
    model.refresh_from_db()
    assert run.status == "failed" and "failed the parity gate and was not kept: 3 of 12" in run.error_message
    assert "9 of 12 detections matched" in run.error_message
    assert not model.onnx and model.onnx_sha256 == "" and model.onnx_report["passed"] is False
    assert not local_file(f"models/{model.artifact_key}/model.onnx").exists()


def test_onnx_runtime_needs_an_export_that_passed(world):
    owner = world.users["owner"]
    with pytest.raises(ApplicationError) as refused:
        detection_run_create(
            model=world.model, orthophotos=[world.orthophoto], parameters={"engine": "onnxruntime"}, created_by=owner
        )
    assert "no ONNX export" in refused.value.extra["engine"]
    with pytest.raises(ApplicationError, match="cannot run on ONNX Runtime"):
        prediction_create(model=world.model, content=jpeg_bytes(), engine="onnxruntime", user=owner)
    TrainedModel.objects.filter(pk=world.model.pk).update(onnx="models/x/model.onnx", onnx_report={"passed": True})
    world.model.refresh_from_db()
    with pytest.raises(ApplicationError) as refused:
        detection_run_create(
            model=world.model,
            orthophotos=[world.orthophoto],
            parameters={"engine": "onnxruntime", "device": "gpu"},
            created_by=owner,
        )
    assert "runs on the CPU" in refused.value.extra["device"]
    run = detection_run_create(
        model=world.model, orthophotos=[world.orthophoto], parameters={"engine": "onnxruntime"}, created_by=owner
    )
    assert run.parameters["engine"] == "onnxruntime" and run.parameters["device"] == "cpu"
    assert prediction_create(model=world.model, content=jpeg_bytes(), engine="onnxruntime", user=owner).engine == (
        "onnxruntime"
    )
