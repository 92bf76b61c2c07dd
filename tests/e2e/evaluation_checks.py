"""Checks of a trained model's results in depth, run inside the pipeline test on the model it trained (one
training shared): its stored per-class validation, its manifest, evaluation runs through the real worker (API on
another dataset, ``manage.py evaluate`` on its own recorded split) and cancelling one."""

from __future__ import annotations

import io
import time

import psutil
from django.core.files.storage import default_storage
from django.core.management import call_command

from models_registry.models import Evaluation, TrainedModel
from tests.conftest import wait_for
from training.models import TrainingManifest, TrainingRun


def _follow(run_id: int, timeout: float = 600) -> TrainingRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = TrainingRun.objects.get(pk=run_id)
        if run.is_finished:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


def check_validation_results(model: TrainedModel) -> Evaluation:
    """The training run evaluated its registered checkpoint per class on its validation split, and recorded
    exactly what it trained and validated on."""
    run = model.source_run
    assert run is not None
    evaluation = Evaluation.objects.get(model=model, kind=Evaluation.Kind.VALIDATION)
    assert evaluation.run == run and evaluation.dataset == model.dataset
    assert [r["class"] for r in evaluation.per_class] == model.class_names
    # The same checkpoint on the same split: the overall figure is the registered one.
    assert abs(evaluation.metrics["bbox_mAP_50"] - model.bbox_mAP_50) < 0.01, (evaluation.metrics, model.bbox_mAP_50)
    for row in evaluation.per_class:
        assert row["gt_boxes"] > 0 and 0 <= row["ap50"] <= 1 and row["recall"] is not None
    assert set(evaluation.pr_curves) == {"0.5", "0.75"}
    matrix = evaluation.confusion["matrix"]
    assert sum(map(sum, matrix[:-1])) == evaluation.counts["gt_boxes"]  # every box counted once
    manifest = TrainingManifest.objects.get(run=run)
    val = manifest.validation_coco  # the held-out document the run's child validated on (file names: stored ones)
    assert all(default_storage.exists(i["file_name"]) for i in val["images"])
    assert manifest.val_image_ids == sorted(i["id"] for i in val["images"])
    assert sorted(manifest.val_box_ids) == sorted(a["id"] for a in val["annotations"])
    assert not set(manifest.train_image_ids) & set(manifest.val_image_ids)
    assert evaluation.images.count() == len(val["images"])
    return evaluation


def check_evaluation_runs(model: TrainedModel, other_dataset, api) -> None:
    validation = Evaluation.objects.get(model=model, kind=Evaluation.Kind.VALIDATION)

    # 1. API: the model on another dataset of the same classes, through the worker.
    response = api.post(
        "/api/training-runs/evaluate/",
        {"model": model.pk, "dataset": other_dataset.pk, "split": "all", "parameters": {"score_threshold": 0.4}},
        format="json",
    )
    assert response.status_code == 202, response.content
    run = _follow(response.json()["id"])
    assert run.status == "succeeded" and run.kind == "evaluate", run.error_message
    assert run.progress_percent == 100.0 and run.max_iters > 0
    stored = Evaluation.objects.get(run=run)
    assert stored.kind == "evaluation" and stored.dataset == other_dataset and stored.score_threshold == 0.4
    assert stored.counts["images"] == other_dataset.images.count()
    assert [r["class"] for r in stored.per_class] == model.class_names and stored.metrics["bbox_mAP_50"] > 0.3
    listed = api.get(f"/api/evaluations/?model={model.pk}").json()["results"]
    assert {e["id"] for e in listed} == {validation.pk, stored.pk}
    gallery = api.get(f"/api/evaluations/{stored.pk}/images/?order=worst").json()
    errors = [row["errors"] for row in gallery["results"]]
    assert gallery["count"] == stored.counts["images"] and errors == sorted(errors, reverse=True)
    picture = api.get(gallery["results"][0]["image_url"])
    assert picture.status_code == 200 and picture.content[:2] == b"\xff\xd8"

    # 2. The command line, on the model's own recorded split: the same figures as the training run's validation.
    out = io.StringIO()
    call_command("evaluate", "--model", str(model.pk), "--split", "model", "--wait", stdout=out, stderr=io.StringIO())
    own = Evaluation.objects.filter(model=model, kind="evaluation").exclude(pk=stored.pk).get()
    assert own.counts["images"] == validation.counts["images"]
    assert abs(own.metrics["bbox_mAP_50"] - validation.metrics["bbox_mAP_50"]) < 0.005, (
        own.metrics,
        validation.metrics,
    )
    assert "AP50" in out.getvalue() and model.class_names[0] in out.getvalue()

    # 3. Cancel: an evaluation stopped while it runs ends cancelled, with nothing stored and no process left.
    response = api.post("/api/training-runs/evaluate/", {"model": model.pk, "dataset": other_dataset.pk}, format="json")
    run_id = response.json()["id"]
    deadline = time.monotonic() + 120
    while TrainingRun.objects.get(pk=run_id).training_pid is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert api.post(f"/api/training-runs/{run_id}/cancel/").status_code == 200
    run = _follow(run_id, timeout=60)
    assert run.status == "cancelled"

    def gone() -> bool:  # the worker stops the process group at its next progress tick
        try:
            return psutil.Process(run.training_pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, timeout=30, message="the evaluation process to end")
    assert not Evaluation.objects.filter(run=run).exists()
    assert TrainingRun.objects.get(pk=run_id).status == "cancelled"
