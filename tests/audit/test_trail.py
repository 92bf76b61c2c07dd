"""Every state change of a run and every publish / unpublish / delete of a model is recorded: who, when, where."""

import io

import pytest
from django.core.management import call_command
from django.test import Client

from audit.models import AuditEvent
from core.interface import audit_interface
from scheduler.reaper import training_runs_reap_stale
from training.models import TrainingRun
from training.services import training_run_claim, training_run_create, training_run_fail

pytestmark = pytest.mark.django_db


def events(obj):
    return list(
        AuditEvent.objects.filter(object_type=obj._meta.model_name, object_id=obj.pk)
        .order_by("id")
        .values_list("action", "interface", "actor__username")
    )


def test_api_cancel_and_retry_are_recorded_with_user_and_interface(world):
    TrainingRun.objects.filter(pk=world.run.pk).update(status="queued")
    client = world.client("owner")
    assert client.post(f"/api/training-runs/{world.run.pk}/cancel/").status_code == 200
    response = client.post(f"/api/training-runs/{world.run.pk}/retry/")
    new = TrainingRun.objects.get(pk=response.json()["id"])
    assert events(world.run)[-2:] == [("cancelled", "api", "owner"), ("retried", "api", "owner")]
    assert events(new) == [("created", "api", "owner")]
    assert AuditEvent.objects.get(object_id=new.pk, action="created").detail["retry_of"] == world.run.pk


def test_worker_transitions_are_recorded(world):
    run = training_run_create(dataset=world.dataset, created_by=world.users["owner"])
    with audit_interface("worker"):
        assert training_run_claim(run_id=run.pk)
        training_run_fail(run_id=run.pk, message="CUDA out of memory")
    assert events(run) == [("created", "system", "owner"), ("started", "worker", None), ("failed", "worker", None)]
    assert AuditEvent.objects.get(object_id=run.pk, action="failed").detail["reason"] == "CUDA out of memory"


def test_reaped_runs_are_recorded(world):
    from datetime import timedelta

    from django.utils import timezone

    TrainingRun.objects.filter(pk=world.run.pk).update(
        status="running", heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    training_runs_reap_stale(limit_seconds=60)
    event = AuditEvent.objects.get(object_id=world.run.pk, action="failed")
    assert event.detail["reaped"] is True and "heartbeats" in event.detail["reason"]


def test_publishing_from_admin_and_cli_and_deleting_from_api_are_recorded(world):
    publisher = world.users["publisher"]
    publisher.is_staff = True
    publisher.save()
    admin = Client()
    admin.force_login(publisher)
    admin.post(f"/admin/models_registry/trainedmodel/{world.model.pk}/publish/", {"publish": "1"})
    call_command("publish_model", str(world.model.pk), "--unpublish", "--user", "admin", stdout=io.StringIO())
    assert world.client("owner").delete(f"/api/trained-models/{world.model.pk}/").status_code == 204
    assert events(world.model)[-3:] == [
        ("published", "admin", "publisher"),
        ("unpublished", "cli", "admin"),
        ("deleted", "api", "owner"),
    ]
    assert AuditEvent.objects.filter(object_id=world.model.pk, action="deleted").get().object_name == "owner's run"


def test_the_trail_is_visible_in_the_admin_to_administrators_only(world):
    TrainingRun.objects.filter(pk=world.run.pk).update(status="queued")
    world.client("owner").post(f"/api/training-runs/{world.run.pk}/cancel/")
    clients = {}
    for role in ("admin", "owner", "viewer"):
        user = world.users[role]
        user.is_staff = True
        user.save()
        clients[role] = Client()
        clients[role].force_login(user)
    page = clients["admin"].get("/admin/audit/auditevent/")
    assert page.status_code == 200 and "cancelled" in page.content.decode()
    assert clients["viewer"].get("/admin/audit/auditevent/").status_code == 403
    run_page = clients["owner"].get(f"/admin/training/trainingrun/{world.run.pk}/change/").content.decode()
    assert "audit-trail" in run_page and "cancelled" in run_page
