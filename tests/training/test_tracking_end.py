"""A training that did not end its MLflow run itself (cancelled, out of time, failed in the worker) has it ended by
its worker (training.execution.common.tracking_ended), against a store on local files (SQLite, no server)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from training.execution.common import tracking_ended
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("status", ["KILLED", "FAILED"])
def test_the_worker_ends_a_tracked_run_that_its_training_left_running(world, settings, tmp_path, status):
    settings.DUMPSITE_MLFLOW_TRACKING_URI = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=settings.DUMPSITE_MLFLOW_TRACKING_URI)
    running = client.create_run(client.create_experiment("dump sites")).info.run_id
    finished = client.create_run(client.get_experiment_by_name("dump sites").experiment_id).info.run_id
    client.set_terminated(finished, "FINISHED")
    for mlflow_run, expected in ((running, status), (finished, "FINISHED")):
        TrainingRun.objects.filter(pk=world.run.pk).update(tracking={"mlflow": {"run_id": mlflow_run}})
        tracking_ended(world.run, status)
        assert client.get_run(mlflow_run).info.status == expected  # a run that ended keeps how it ended


def test_only_a_recorded_mlflow_run_of_a_tracking_site_is_ended_and_a_silent_server_is_not_raised(
    world, settings, monkeypatch, caplog
):
    from training.execution import common

    asked = []
    monkeypatch.setattr(common, "mlflow_run_terminated", lambda *args: asked.append(args))
    settings.DUMPSITE_MLFLOW_TRACKING_URI = "http://127.0.0.1:9"
    tracking_ended(world.run, "KILLED")  # no MLflow run recorded
    TrainingRun.objects.filter(pk=world.run.pk).update(tracking={"mlflow": {"run_id": "abc"}})
    settings.DUMPSITE_MLFLOW_TRACKING_URI = ""
    tracking_ended(world.run, "KILLED")  # the site tracks nothing
    assert asked == []
    settings.DUMPSITE_MLFLOW_TRACKING_URI = "http://127.0.0.1:9"
    tracking_ended(world.run, "KILLED")
    assert asked == [("abc", "KILLED")]

    monkeypatch.undo()
    settings.DUMPSITE_MLFLOW_TRACKING_URI = "http://127.0.0.1:9"  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracking_ended(world.run, "KILLED")  # logged, not raised: the run's own end comes first
    assert "MLflow run abc could not be ended KILLED" in caplog.text
