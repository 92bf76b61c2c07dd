"""The warm child of predict checks (``engine.warm``), on a real model: a second check of a model skips its load and
answers the same; models beyond the bound are dropped; a child that dies, fails or runs past its time limit is
replaced and the next check succeeds; an ONNX export runs there too."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from engine.onnx_export import OnnxExportJob, export_onnx
from engine.predict import PredictionError
from engine.supervisor import child_environment
from engine.warm import WarmPredictor
from tests.engine.test_onnx_export import CLASSES, pictures, saved_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A RetinaNet's config and checkpoint, its ONNX export, and two pictures."""
    tmp = tmp_path_factory.mktemp("warm")
    config, checkpoint = saved_model(tmp, "retinanet_r18_tiny", 256)
    gt = pictures(tmp, [(300, 220), (256, 256)])
    job = OnnxExportJob(
        config_file=config,
        checkpoint=checkpoint,
        classes=CLASSES,
        gt_file=str(gt),
        image_root=str(tmp),
        out_file=str(tmp / "model.onnx"),
        events_file=str(tmp / "events.jsonl"),
        result_file=str(tmp / "report.json"),
        threads=2,
    )
    assert export_onnx(job, lambda event, **p: None)["passed"]
    return {"config": config, "checkpoint": checkpoint, "onnx": str(tmp / "model.onnx"), "images": tmp}


def check(model: dict, *, onnx: bool = False, picture: str = "1.jpg", key: str = "a") -> dict:
    job = {
        "config": model["config"],
        "checkpoint": model["checkpoint"],
        "model_key": key,
        "images": [{"path": str(model["images"] / picture), "name": picture}],
        "score_threshold": 0.15,
    }
    return {**job, "onnx": model["onnx"], "model_key": f"{key}-onnx"} if onnx else job


@pytest.fixture
def warm():
    predictor = WarmPredictor(env=child_environment(), max_models=1, max_rss_mb=8192)
    yield predictor
    predictor.stop()


def test_the_second_check_of_a_model_skips_its_load_and_answers_the_same(warm, model):
    cold = warm.run(check(model), timeout=120)
    again = warm.run(check(model), timeout=120)
    assert not cold["warm"] and cold["load_seconds"] > 0
    assert again["warm"] and again["load_seconds"] == 0.0 and again["images"] == cold["images"]
    assert again["images"][0]["boxes"] and again["engine"] == "pytorch"
    assert again["seconds"] < cold["seconds"] + cold["load_seconds"]

    # Its ONNX export in the same child: one model kept (the bound), so the checkpoint's is dropped.
    pid = warm.pid
    onnx = warm.run(check(model, onnx=True), timeout=120)
    assert onnx["engine"] == "onnxruntime" and not onnx["warm"] and warm.pid == pid
    ours = {(b["label"], tuple(b["bbox"])) for b in onnx["images"][0]["boxes"]}
    theirs = {(b["label"], tuple(b["bbox"])) for b in again["images"][0]["boxes"]}
    assert len(ours) == len(theirs) and ours
    assert not warm.run(check(model), timeout=120)["warm"]  # loaded again: it had been dropped


def test_a_child_that_dies_is_replaced_and_the_next_check_succeeds(warm, model):
    warm.run(check(model), timeout=120)
    first = warm.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert warm.proc is not None and warm.proc.wait(timeout=10) == -signal.SIGKILL
    answer = warm.run(check(model), timeout=120)
    assert answer["images"][0]["boxes"] and warm.pid not in (None, first) and not answer["warm"]


def test_a_failed_check_ends_the_child_and_the_next_one_succeeds(warm, model):
    warm.run(check(model), timeout=120)
    first = warm.pid
    with pytest.raises(PredictionError, match="missing.jpg"):
        warm.run(check(model, picture="missing.jpg"), timeout=120)
    assert first is not None and warm.pid is None and not psutil.pid_exists(first)
    assert warm.run(check(model), timeout=120)["images"][0]["boxes"]


def test_a_check_past_its_time_limit_is_stopped_with_its_child(warm, model):
    warm.run(check(model), timeout=120)
    first = warm.pid
    many = check(model)
    many["images"] = many["images"] * 400
    started = time.monotonic()
    with pytest.raises(PredictionError, match="longer than 1 s"):
        warm.run(many, timeout=1)
    assert time.monotonic() - started < 10 and warm.pid is None and not psutil.pid_exists(first or 0)
    assert warm.run(check(model), timeout=120)["images"][0]["boxes"]


def detection_job(model: dict, tmp_path, name: str) -> dict:
    """A detection job over a small GeoTIFF (nine windows of 128 px) with files of its own."""
    from dataclasses import asdict

    from engine.detect import DetectionJob
    from tests.detection.scenes import scene, write_geotiff

    path = tmp_path / "small.tif"
    if not path.exists():
        picture = scene(300, 300, [(60, 70, 50, 46), (190, 150, 48, 52)], seed=3)
        write_geotiff(path, picture.pixels, srid=32633, geotransform=[500_000.0, 0.1, 0.0, 5e6, 0.0, -0.1])
    raster = {"id": 1, "path": str(path), "frame": 0, "to_frame": [0, 1, 0, 0, 0, 1], "width": 300, "height": 300}
    job = DetectionJob(
        config_file=model["config"],
        checkpoint=model["checkpoint"],
        classes=CLASSES,
        rasters=[raster],
        events_file=str(tmp_path / f"{name}.events"),
        result_file=str(tmp_path / f"{name}.json"),
        tile_size=128,
        score_threshold=0.15,
    )
    return asdict(job)


def detected(warm, job: dict, *, keep_going=True):
    import json
    from pathlib import Path

    pids: list[int] = []
    result = warm.detect(
        job,
        on_progress=lambda state: keep_going,
        on_start=pids.append,
        interval=0.05,
        timeout=120,
    )
    found = json.loads(Path(job["result_file"]).read_text()) if result.returncode == 0 else None
    return result, found, pids[0]


def test_a_small_detection_runs_in_the_warm_child_and_a_cancel_ends_it(warm, model, tmp_path):
    first, found, pid = detected(warm, detection_job(model, tmp_path, "a"))
    assert first.returncode == 0 and first.error is None and not warm.last_answer["result"]["warm"]
    assert first.state["iter"] == first.state["max_iters"] == found["windows"] == 9 and found["detections"]
    again, found_again, same_pid = detected(warm, detection_job(model, tmp_path, "b"))
    assert again.returncode == 0 and warm.last_answer["result"]["warm"] and same_pid == pid
    assert found_again["detections"] == found["detections"]

    # A cancel (the watcher says stop) ends the warm child with the job; the next job starts a new one.
    stopped, _, _ = detected(warm, detection_job(model, tmp_path, "c"), keep_going=False)
    assert stopped.stopped and stopped.returncode == -signal.SIGKILL and warm.pid is None
    assert not psutil.pid_exists(pid)
    after, found_after, new_pid = detected(warm, detection_job(model, tmp_path, "d"))
    assert after.returncode == 0 and new_pid != pid and not warm.last_answer["result"]["warm"]
    assert found_after["detections"] == found["detections"]

    # A job that fails says why, like a child of its own.
    broken = detection_job(model, tmp_path, "e")
    broken["rasters"][0]["path"] = str(tmp_path / "gone.tif")
    failed, _, _ = detected(warm, broken)
    assert failed.returncode == 1 and "not a regular file" in (failed.error or "") and warm.pid is None
