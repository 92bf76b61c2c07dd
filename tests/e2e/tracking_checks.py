"""Experiment tracking of a real run (tests/e2e/test_training_pipeline.py): its TensorBoard files downloaded from
the API and read by TensorBoard's own reader, its MLflow run in a store on local files (no server), and the version
a publication registers in MLflow's model registry."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from models_registry.mlflow_versions import registered_name
from models_registry.models import TrainedModel
from models_registry.services import trained_model_publish, trained_model_unpublish
from tests.conftest import wait_for
from training.models import TrainingRun

PUBLIC_URL = "https://dumpsite.example.org"


def mlflow_env(tmp_path: Path) -> dict:
    """A worker's settings for an MLflow store on local files: a SQLite database and an artifact folder."""
    return {
        "DUMPSITE_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "DUMPSITE_MLFLOW_ARTIFACT_LOCATION": str(tmp_path / "mlartifacts"),
        "DUMPSITE_MLFLOW_EXPERIMENT": "dump sites",
        "DUMPSITE_PUBLIC_URL": PUBLIC_URL,
    }


def check_tensorboard_files(client, run: TrainingRun, names: list[str], tmp_path: Path) -> None:
    """The run's event files, as a user downloads them, read by TensorBoard's own reader: the loss each logging
    interval, the validation metrics of each epoch, the config with the class names literal and no folder of ours."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run.refresh_from_db()
    assert client.get(f"/api/training-runs/{run.pk}/").json()["tracking"] == run.tracking  # the MLflow run's id
    response = client.get(f"/api/training-runs/{run.pk}/tensorboard/")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    folder = tmp_path / "tensorboard"
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        members = archive.namelist()
        assert members and all(m.startswith(f"run-{run.pk}/events.out.tfevents.") for m in members), members
        archive.extractall(folder)
    events = EventAccumulator(str(folder / f"run-{run.pk}"), size_guidance={"tensors": 0, "scalars": 0}).Reload()
    scalars = events.Tags()["scalars"]
    assert {"loss", "lr", "coco/bbox_mAP_50"} <= set(scalars), scalars
    assert [e.step for e in events.Scalars("coco/bbox_mAP_50")] == list(range(1, run.max_epochs + 1))
    mAP50 = events.Scalars("coco/bbox_mAP_50")[-1].value
    assert abs(mAP50 - run.trained_model.metrics_history[-1]["bbox_mAP_50"]) < 1e-3
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    config = json.loads(text.removeprefix("```json\n").removesuffix("\n```"))
    assert config["train_dataloader"]["dataset"]["metainfo"]["classes"] == names
    assert config["work_dir"] == "work_dirs/model"  # the published config: no folder of this server


def check_mlflow_run(tmp_path: Path, run: TrainingRun, names: list[str], secret: str) -> str:
    """The run's MLflow run: the platform's parameters and tags, the per-epoch metrics, the published config as an
    artifact, FINISHED; the secret of the worker's environment nowhere in the store. Returns its id."""
    from mlflow.tracking import MlflowClient

    run.refresh_from_db()
    mlflow_run_id = run.tracking["mlflow"]["run_id"]
    client = MlflowClient(tracking_uri=mlflow_env(tmp_path)["DUMPSITE_MLFLOW_TRACKING_URI"])
    tracked = client.get_run(mlflow_run_id)
    assert tracked.info.status == "FINISHED"
    assert client.get_experiment(tracked.info.experiment_id).name == "dump sites"
    assert tracked.data.params["epochs"] == str(run.parameters["epochs"]) and tracked.data.params["batch_size"] == "4"
    assert tracked.data.params["architecture"] == run.architecture
    assert tracked.data.tags["dumpsite.run_id"] == str(run.pk)
    assert tracked.data.tags["dumpsite.run_url"] == f"{PUBLIC_URL}/api/training-runs/{run.pk}/"
    assert json.loads(tracked.data.tags["dumpsite.classes"]) == names
    history = client.get_metric_history(mlflow_run_id, "coco/bbox_mAP_50")
    assert [m.step for m in history] == list(range(1, run.max_epochs + 1))
    assert abs(history[-1].value - run.trained_model.metrics_history[-1]["bbox_mAP_50"]) < 1e-3
    assert client.get_metric_history(mlflow_run_id, "loss")
    config = json.loads(Path(client.download_artifacts(mlflow_run_id, "config.json", str(tmp_path))).read_text())
    assert config["train_dataloader"]["dataset"]["metainfo"]["classes"] == names
    assert [a.path for a in client.list_artifacts(mlflow_run_id)] == ["config.json"]  # no work dir uploaded
    for path in [tmp_path / "mlflow.db", *(tmp_path / "mlartifacts").rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    return mlflow_run_id


def check_mlflow_model_version(tmp_path: Path, model: TrainedModel, mlflow_run_id: str, worker) -> None:
    """Publishing registers a version pointing at the platform's model (a worker's task, after the commit);
    withdrawing it tags the version unpublished, and publishing again reuses it."""
    from mlflow.tracking import MlflowClient

    def registration(**expected):
        def ready():
            got = TrainedModel.objects.get(pk=model.pk).mlflow_registration
            return got if all(got.get(k) == v for k, v in expected.items()) else None

        return ready

    trained_model_publish(model=model)
    done = wait_for(registration(error=""), timeout=60, message=f"the MLflow version\n{worker.output()[-3000:]}")
    name = registered_name(model)
    assert done["name"] == name and done["version"] == "1"
    client = MlflowClient(tracking_uri=mlflow_env(tmp_path)["DUMPSITE_MLFLOW_TRACKING_URI"])
    version = client.get_model_version(name, "1")
    assert version.source == f"{PUBLIC_URL}/api/trained-models/{model.pk}/download/?artifact=bundle"
    assert version.run_id == mlflow_run_id
    assert version.tags["dumpsite.model_id"] == str(model.pk) and version.tags["dumpsite.published"] == "true"
    assert version.tags["dumpsite.checkpoint_sha256"] == model.checkpoint_sha256

    trained_model_unpublish(model=model)
    wait_for(
        lambda: client.get_model_version(name, "1").tags.get("dumpsite.published") == "false",
        timeout=60,
        message="the version tagged unpublished",
    )
    trained_model_publish(model=model)
    wait_for(
        lambda: client.get_model_version(name, "1").tags.get("dumpsite.published") == "true",
        timeout=60,
        message="the version tagged published again",
    )
    assert [str(v.version) for v in client.search_model_versions(f"run_id = '{mlflow_run_id}'")] == ["1"]
