"""A publication as a version of an MLflow registered model (models_registry/mlflow_versions.py), against a store on
local files (SQLite, no server): the version points at the platform's model and at the run's MLflow run, a
withdrawal tags it, publishing again reuses it, a server that does not answer is recorded, and a site without MLflow
sends nothing."""

from __future__ import annotations

import pytest
from django_q.models import OrmQ
from mlflow.tracking import MlflowClient

from models_registry.mlflow_versions import mlflow_model_sync
from models_registry.models import TrainedModel
from models_registry.services import trained_model_publish, trained_model_unpublish
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def mlflow_site(settings, tmp_path):
    settings.DUMPSITE_MLFLOW_TRACKING_URI = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings.DUMPSITE_MLFLOW_MODEL_PREFIX = "dumpsite: "
    settings.DUMPSITE_PUBLIC_URL = "https://dumpsite.example.org/"
    return MlflowClient(tracking_uri=settings.DUMPSITE_MLFLOW_TRACKING_URI)


def queued_syncs() -> list:
    return [t for t in OrmQ.objects.all() if t.task.get("func") == "models_registry.tasks.sync_to_mlflow"]


def test_publishing_registers_a_version_pointing_at_the_platforms_model(
    world, mlflow_site, django_capture_on_commit_callbacks
):
    model = world.model
    experiment = mlflow_site.create_experiment("dump sites")
    trained = mlflow_site.create_run(experiment).info.run_id
    TrainingRun.objects.filter(pk=model.source_run_id).update(tracking={"mlflow": {"run_id": trained}})

    with django_capture_on_commit_callbacks(execute=True) as sent:
        trained_model_publish(model=model, user=world.users["publisher"])
    assert len(sent) == 1 and [t.task["args"] for t in queued_syncs()] == [(model.pk,)]  # once it committed
    got = mlflow_model_sync(model_id=model.pk)
    assert got["name"] == f"dumpsite- {model.name}"  # MLflow refuses ":" and "/" in names
    assert got["version"] == "1" and got["error"] == ""
    assert TrainedModel.objects.get(pk=model.pk).mlflow_registration == got
    version = mlflow_site.get_model_version(got["name"], "1")
    assert version.source == f"https://dumpsite.example.org/api/trained-models/{model.pk}/download/?artifact=bundle"
    assert version.run_id == trained
    assert version.tags["dumpsite.model_id"] == str(model.pk)
    assert version.tags["dumpsite.checkpoint_sha256"] == model.checkpoint_sha256
    assert version.tags["dumpsite.published"] == "true"

    trained_model_unpublish(model=model, user=world.users["publisher"])
    mlflow_model_sync(model_id=model.pk)
    assert mlflow_site.get_model_version(got["name"], "1").tags["dumpsite.published"] == "false"
    trained_model_publish(model=model, user=world.users["publisher"])
    assert mlflow_model_sync(model_id=model.pk)["version"] == "1"  # the same version, published again
    assert mlflow_site.get_model_version(got["name"], "1").tags["dumpsite.published"] == "true"
    assert len(mlflow_site.search_model_versions(f"run_id = '{trained}'")) == 1


def test_a_second_model_of_the_same_name_is_the_next_version(world, mlflow_site):
    world.published.name = world.model.name
    world.published.save(update_fields=["name"])
    for model in (world.model, world.published):
        trained_model_publish(model=model)
        mlflow_model_sync(model_id=model.pk)
    versions = [
        TrainedModel.objects.get(pk=m.pk).mlflow_registration["version"] for m in (world.model, world.published)
    ]
    assert versions == ["1", "2"]
    assert mlflow_site.get_model_version(f"dumpsite- {world.model.name}", "2").run_id in (None, "")


def test_a_tracking_server_that_does_not_answer_is_recorded_and_publishing_again_retries(
    world, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.DUMPSITE_MLFLOW_TRACKING_URI = "http://127.0.0.1:9"  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    trained_model_publish(model=world.model)
    got = mlflow_model_sync(model_id=world.model.pk)
    assert got.get("version") is None and "ConnectionError" in got["error"], got
    assert TrainedModel.objects.get(pk=world.model.pk).mlflow_registration["error"] == got["error"]
    with django_capture_on_commit_callbacks() as sent:
        trained_model_publish(model=world.model)  # already published: only MLflow is tried again
    assert len(sent) == 1


def test_a_site_without_mlflow_sends_nothing(world, settings, django_capture_on_commit_callbacks):
    settings.DUMPSITE_MLFLOW_TRACKING_URI = ""
    with django_capture_on_commit_callbacks(execute=True):
        trained_model_publish(model=world.model)
        trained_model_unpublish(model=world.model)
    assert queued_syncs() == [] and TrainedModel.objects.get(pk=world.model.pk).mlflow_registration == {}
