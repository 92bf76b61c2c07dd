"""The training child's tracking backends (engine/tracking.py), driven as mmengine's visualizer drives them: the
config recorded as JSON with user text literal, scalars by step, the MLflow run's id told to the worker through the
events file, and a run that raised ended FAILED. MLflow writes to a store on local files (SQLite, no server)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mmengine.config import Config

from engine import tracking
from engine.events import fold_progress, read_events

NAMES = ['pile "quoted"\nwith newline', "{{ fileDirname }}", "__import__('os')"]


def config(work_dir: str) -> Config:
    return Config(
        {
            "work_dir": work_dir,
            "load_from": "/srv/private/base.pth",
            "train_dataloader": {
                "dataset": {"metainfo": {"classes": NAMES}, "data_root": "/srv/private/", "ann_file": "/srv/a.json"}
            },
        }
    )


def build(spec: dict):
    from mmengine.registry import VISBACKENDS

    from engine import vis_backend  # noqa: F401 - registers JsonConfigLocalVisBackend

    return VISBACKENDS.build({**spec, "save_dir": spec.get("save_dir", "unused")})


def test_backends_are_the_local_one_and_tensorboard_and_mlflow_only_with_a_uri(tmp_path):
    plain = tracking.backends({"tensorboard_dir": str(tmp_path / "tb"), "mlflow": None})
    assert [b["type"] for b in plain] == ["JsonConfigLocalVisBackend", "DumpsiteTensorboardVisBackend"]
    assert plain[1]["save_dir"] == str(tmp_path / "tb")
    mlflow = {"tracking_uri": "sqlite:///x.db", "experiment": "e", "run_name": "r", "tags": {}, "params": {}}
    full = tracking.backends({"tensorboard_dir": "tb", "mlflow": mlflow, "events_file": "ev.jsonl"})
    assert full[-1]["type"] == "DumpsiteMLflowVisBackend" and full[-1]["events_file"] == "ev.jsonl"
    assert full[-1]["artifact_location"] is None  # the store's default where the site names none
    no_tensorboard = tracking.backends({"tensorboard_dir": None, "mlflow": mlflow, "events_file": "ev.jsonl"})
    assert [b["type"] for b in no_tensorboard] == ["JsonConfigLocalVisBackend", "DumpsiteMLflowVisBackend"]


def test_tensorboard_records_scalars_and_the_published_config_as_json(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    backend = build({"type": "DumpsiteTensorboardVisBackend", "save_dir": str(tmp_path / "tb")})
    backend.add_config(config(str(tmp_path / "work")))
    for step in (1, 2):
        backend.add_scalars({"coco/bbox_mAP_50": 0.25 * step, "loss": 1.0 / step}, step=step)
    backend.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0, "scalars": 0}).Reload()
    assert [(e.step, round(e.value, 3)) for e in events.Scalars("coco/bbox_mAP_50")] == [(1, 0.25), (2, 0.5)]
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    recorded = json.loads(text.removeprefix("```json\n").removesuffix("\n```"))
    assert recorded["train_dataloader"]["dataset"]["metainfo"]["classes"] == NAMES
    assert "/srv/private" not in text and str(tmp_path) not in text  # the published config, not this server's


@pytest.fixture
def store(tmp_path):
    return {
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "experiment": "dump sites",
        "run_name": "run-7 night",
        "tags": {"dumpsite.run_id": "7"},
        "params": {"epochs": 3, "lr": 0.01},
        "artifact_location": str(tmp_path / "artifacts"),
    }


def test_mlflow_gets_params_tags_metrics_and_the_config_and_the_worker_its_id(tmp_path, store):
    import mlflow
    from mlflow.tracking import MlflowClient

    events_file = tmp_path / "events.jsonl"
    spec = tracking.backends(
        {"tensorboard_dir": str(tmp_path / "tb"), "mlflow": store, "events_file": str(events_file)}
    )
    backend = build(spec[-1])
    backend.add_config(config(str(tmp_path / "work")))
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "detections.bbox.json").write_text("[]")  # mmengine's backend would upload this
    backend.add_scalars({"coco/bbox_mAP_50": 0.5}, step=1)
    backend.add_scalars({"coco/bbox_mAP_50": 0.75}, step=2)
    backend.close()

    told = fold_progress({}, read_events(events_file))["tracking"]["mlflow"]
    client = MlflowClient(tracking_uri=store["tracking_uri"])
    run = client.get_run(told["run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == told["experiment_id"]
    assert client.get_experiment(run.info.experiment_id).name == "dump sites"
    assert run.data.params == {"epochs": "3", "lr": "0.01"}
    assert run.data.tags["dumpsite.run_id"] == "7" and run.data.tags["mlflow.runName"] == "run-7 night"
    history = client.get_metric_history(told["run_id"], "coco/bbox_mAP_50")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]
    assert [a.path for a in client.list_artifacts(told["run_id"])] == ["config.json"]
    recorded = json.loads(Path(client.download_artifacts(told["run_id"], "config.json", str(tmp_path))).read_text())
    assert recorded["train_dataloader"]["dataset"]["metainfo"]["classes"] == NAMES
    assert mlflow.active_run() is None


def test_a_training_that_raised_ends_its_mlflow_run_failed(tmp_path, store):
    from mlflow.tracking import MlflowClient

    events_file = tmp_path / "events.jsonl"
    spec = tracking.backends(
        {"tensorboard_dir": str(tmp_path / "tb"), "mlflow": store, "events_file": str(events_file)}
    )
    backend = build(spec[-1])
    backend.add_scalars({"loss": 2.0}, step=10)
    tracking.end_failed()  # what the child does when its training raises
    run_id = fold_progress({}, read_events(events_file))["tracking"]["mlflow"]["run_id"]
    assert MlflowClient(tracking_uri=store["tracking_uri"]).get_run(run_id).info.status == "FAILED"
    assert os.path.isfile(tmp_path / "mlflow.db")
