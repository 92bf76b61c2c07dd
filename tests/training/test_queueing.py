"""One create path for runs of every kind: the same limits for a training run, an evaluation and an export, through the
services, the API and the command line; defaults obey the same rules as input."""

from __future__ import annotations

import io

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from core.errors import ApplicationError
from datasets.selectors import dataset_by_ref
from training.models import TrainingRun
from training.services import evaluation_run_create, onnx_export_create, training_run_create

pytestmark = pytest.mark.django_db


def create(kind, world, **kwargs):
    owner = world.users["owner"]
    if kind == "train":
        return training_run_create(dataset=world.dataset, created_by=owner, parameters={"epochs": 1}, **kwargs)
    if kind == "onnx_export":
        return onnx_export_create(model=world.model, created_by=owner, **kwargs)
    return evaluation_run_create(model=world.model, dataset=world.dataset, created_by=owner, **kwargs)


@pytest.mark.parametrize("kind", ["train", "evaluate", "onnx_export"])
@pytest.mark.parametrize("limit", ["above", 0, -5, True, "60", 1.5])
def test_every_kind_of_run_refuses_the_same_time_limits(world, kind, limit):
    limit = settings.TRAINING_RUN_TIMEOUT + 1 if limit == "above" else limit
    before = TrainingRun.objects.count()
    with pytest.raises(ApplicationError, match="Invalid time limit") as refused:
        create(kind, world, time_limit_seconds=limit)
    assert str(settings.TRAINING_RUN_TIMEOUT) in refused.value.extra["time_limit_seconds"]
    assert TrainingRun.objects.count() == before


@pytest.mark.parametrize("kind", ["train", "evaluate", "onnx_export"])
def test_every_kind_of_run_takes_a_time_limit_up_to_the_sites(world, kind):
    run = create(kind, world, time_limit_seconds=settings.TRAINING_RUN_TIMEOUT)
    assert run.kind == kind and run.time_limit_seconds == settings.TRAINING_RUN_TIMEOUT


@pytest.mark.parametrize("kind", ["train", "evaluate", "onnx_export"])
def test_every_kind_of_run_refuses_a_name_too_long_and_an_unknown_priority(world, kind):
    with pytest.raises(ApplicationError, match="too long"):
        create(kind, world, name="x" * 201)
    with pytest.raises(ApplicationError, match="Invalid priority"):
        create(kind, world, priority="urgent")


def test_an_evaluation_over_the_time_limit_is_refused_by_the_api_like_a_training_run(world):
    client = world.client("owner")
    too_long = settings.TRAINING_RUN_TIMEOUT + 1
    answers = [
        client.post(
            "/api/training-runs/",
            {"dataset": world.dataset.pk, "parameters": {"epochs": 1}, "time_limit_seconds": too_long},
            format="json",
        ),
        client.post(
            "/api/training-runs/evaluate/",
            {"model": world.model.pk, "dataset": world.dataset.pk, "time_limit_seconds": too_long},
            format="json",
        ),
    ]
    for answer in answers:
        assert answer.status_code == 400, answer.content
        assert "time_limit_seconds" in answer.json()["errors"]
    assert not TrainingRun.objects.filter(time_limit_seconds=too_long).exists()


def test_a_default_name_is_shortened_to_fit_and_a_given_one_is_not(world, make_dataset):
    long_name = "Orthophoto tiles of the northern industrial zone, spring flight " * 4
    dataset = make_dataset(name=long_name[:200])
    run = training_run_create(dataset=dataset, created_by=world.users["admin"], parameters={"epochs": 1})
    assert len(run.name) == 200 and run.name.endswith("…") and run.name.startswith(dataset.name[:150])

    out = io.StringIO()  # the command line's default name too (it used to refuse: "The run name is too long")
    call_command("train", "--dataset", str(dataset.pk), "--epochs", "1", "--user", "admin", stdout=out)
    assert "Queued training run" in out.getvalue()
    assert TrainingRun.objects.filter(dataset=dataset).count() == 2
    with pytest.raises(CommandError, match="The run name is too long"):
        call_command("train", "--dataset", str(dataset.pk), "--name", "n" * 201, "--user", "admin")


def test_the_commands_find_a_dataset_by_id_or_name_among_those_the_user_sees(world, django_user_model):
    model = str(world.model.pk)
    out = io.StringIO()
    for ref in (world.dataset.name, str(world.dataset.pk), f" {world.dataset.pk} "):
        call_command("evaluate", "--model", model, "--dataset", ref, "--user", "owner", stdout=out)
    assert out.getvalue().count("Queued evaluation run") == 3
    for ref in ("no such dataset", "999999"):
        with pytest.raises(CommandError, match="No dataset"):
            call_command("evaluate", "--model", model, "--dataset", ref, "--user", "owner")
    outsider = django_user_model.objects.create_user("outsider")  # no role: sees no dataset
    with pytest.raises(ApplicationError, match="No dataset") as refused:
        dataset_by_ref(outsider, str(world.dataset.pk))
    assert refused.value.extra == {"dataset": "no such dataset"}
