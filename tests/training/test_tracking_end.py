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


@pytest.mark.parametrize("how", ["heartbeat", "process"])
def test_a_reaped_runs_mlflow_run_is_ended_failed_by_a_worker_task(world, settings, tmp_path, how):
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import OrmQ

    from scheduler.reaper import END_TRACKING_TASK, training_runs_reap_stale, training_runs_reconcile_host
    from scheduler.tasks import end_tracking

    settings.DUMPSITE_MLFLOW_TRACKING_URI = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=settings.DUMPSITE_MLFLOW_TRACKING_URI)
    mlflow_run = client.create_run(client.create_experiment("dump sites")).info.run_id
    untracked = TrainingRun.objects.create(
        name="untracked", dataset=world.run.dataset, created_by=world.run.created_by, parameters={}
    )
    long_ago = timezone.now() - timedelta(hours=1)
    for run, tracking in ((world.run, {"mlflow": {"run_id": mlflow_run}}), (untracked, {})):
        TrainingRun.objects.filter(pk=run.pk).update(
            status="running",
            heartbeat_at=long_ago,
            tracking=tracking,
            worker_host=settings.DUMPSITE_HOST_ID,
            worker_pid=2**22 + 1,
            worker_started=1.0,  # a process that is not there
        )
    OrmQ.objects.all().delete()
    if how == "heartbeat":
        assert sorted(training_runs_reap_stale(limit_seconds=60)) == sorted([world.run.pk, untracked.pk])
    else:
        assert sorted(training_runs_reconcile_host()) == sorted([world.run.pk, untracked.pk])

    sent = [task.task for task in OrmQ.objects.all()]
    assert [(t["func"], t["args"]) for t in sent] == [(END_TRACKING_TASK, (world.run.pk, "FAILED"))]  # tracked only
    assert client.get_run(mlflow_run).info.status == "RUNNING"  # the reaper itself does not wait on MLflow
    end_tracking(*sent[0]["args"])
    assert client.get_run(mlflow_run).info.status == "FAILED"
