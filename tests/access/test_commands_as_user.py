"""Commands act as a named user and obey the same rules as the API and the admin."""

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from core.commands import ensure_operator
from models_registry.models import TrainedModel
from tests.world import make_user
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refusal(*args) -> str:
    with pytest.raises(CommandError) as err:
        run(*args)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_without_an_administrator_a_command_says_whom_to_create(make_dataset):
    make_dataset(name="d")
    assert "No administrator account exists" in refusal("train", "--dataset", "d")
    assert TrainingRun.objects.count() == 0


def test_the_only_administrator_acts_by_default_and_is_recorded(make_dataset):
    make_dataset(name="d")
    assert ensure_operator() == "operator" and ensure_operator() is None  # idempotent
    run("train", "--dataset", "d", "--epochs", "1")
    assert TrainingRun.objects.get().created_by.username == "operator"
    assert not User.objects.get(username="operator").has_usable_password()


def test_with_several_administrators_the_command_asks_who_acts(roles, make_dataset):
    make_dataset(name="d")
    User.objects.create_superuser("alice")
    make_user("bob", "Administrator")
    message = refusal("train", "--dataset", "d")
    assert "Several administrators exist (alice, bob)" in message and "--user" in message
    run("train", "--dataset", "d", "--user", "bob", "--epochs", "1")
    assert TrainingRun.objects.get().created_by.username == "bob"


def test_a_named_user_gets_their_own_permissions(roles, make_dataset, monkeypatch):
    make_dataset(name="d")
    for name, role in (("val", "Viewer"), ("olga", "Trainer"), ("pete", "Trainer")):
        make_user(name, role)
    assert "may not start training runs" in refusal("train", "--dataset", "d", "--user", "val")
    run("train", "--dataset", "d", "--user", "olga", "--epochs", "1")
    own = TrainingRun.objects.get()
    # A run the user may not see is "no such run", exactly like one that does not exist.
    hidden, missing = (
        refusal("cancel_run", str(own.pk), "--user", "pete"),
        refusal("cancel_run", "99999", "--user", "pete"),
    )
    assert hidden == f"No training run #{own.pk}." and missing == "No training run #99999."
    monkeypatch.setenv("DUMPSITE_CLI_USER", "olga")
    run("cancel_run", str(own.pk))
    assert TrainingRun.objects.get().status == "cancelled"
    assert "No user named 'nobody'" in refusal("cancel_run", str(own.pk), "--user", "nobody")


def test_publishing_needs_the_publish_permission_on_the_command_line(world):
    message = refusal("publish_model", str(world.model.pk), "--user", "owner")
    assert message == f"You may not publish model #{world.model.pk}."
    assert (
        refusal("publish_model", str(world.model.pk), "--user", "other_trainer")
        == f"No trained model #{world.model.pk}."
    )
    run("publish_model", str(world.model.pk), "--user", "publisher")
    assert TrainedModel.objects.get(pk=world.model.pk).is_published


def test_registering_and_importing_need_their_permissions(roles, tmp_path):
    make_user("tina", "Trainer")
    (tmp_path / "w.pth").write_bytes(b"never read")
    assert (
        refusal(
            "register_base_model",
            str(tmp_path / "w.pth"),
            "--name",
            "x",
            "--architecture",
            "retinanet_r18_tiny",
            "--user",
            "tina",
        )
        == "tina may not register models."
    )
    assert (
        refusal("make_demo_dataset", "--name", "x", "--images", "2", "--user", "tina") == "You may not create datasets."
    )
