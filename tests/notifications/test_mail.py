"""E-mail when one of a user's runs ends: off by default, a user's own setting, written with the run's end and
sent by the dispatcher through Django's e-mail backend (tried again when the server refuses)."""

from __future__ import annotations

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend

from notifications.delivery import MAIL_ATTEMPTS
from notifications.dispatcher import dispatch_due
from notifications.models import OutgoingMail
from training.models import TrainingRun
from training.services.lifecycle import training_run_fail, training_run_succeed


class RefusingBackend(BaseEmailBackend):
    def send_messages(self, email_messages):
        raise ConnectionRefusedError("the SMTP server is down")


@pytest.fixture
def mailed(world, settings):
    """The owner has an address and asked to be mailed; mails go to Django's in-memory outbox."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DUMPSITE_PUBLIC_URL = "https://dumpsites.example.org/"
    settings.DUMPSITE_WEBHOOK_RETRY_BASE = 0
    owner = world.users["owner"]
    owner.email = "owner@example.org"
    owner.save()
    answer = world.client("owner").patch("/api/me/notifications/", {"email_on_run_end": True}, format="json")
    assert answer.status_code == 200 and answer.json() == {"email_on_run_end": True, "email": "owner@example.org"}
    return world


def end(run, ok=True):
    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    if ok:
        training_run_succeed(run_id=run.pk)
    else:
        training_run_fail(run_id=run.pk, message="CUDA out of memory")


def test_the_setting_is_off_by_default_and_needs_an_address(world):
    client = world.client("viewer")
    assert client.get("/api/me/notifications/").json() == {"email_on_run_end": False, "email": ""}
    answer = client.patch("/api/me/notifications/", {"email_on_run_end": True}, format="json")
    assert answer.status_code == 400 and "no e-mail address" in answer.json()["message"]
    assert client.patch("/api/me/notifications/", {"email_on_run_end": "maybe"}, format="json").status_code == 400
    assert world.client("anonymous").get("/api/me/notifications/").status_code == 401
    end(world.run)
    assert not OutgoingMail.objects.exists()  # its owner did not ask


def test_a_run_that_ends_mails_its_owner_with_its_figures_and_a_link(mailed):
    world = mailed
    end(world.run)
    dispatch_due()
    (sent,) = mail.outbox
    assert sent.to == ["owner@example.org"] and f"#{world.run.pk}" in sent.subject and "succeeded" in sent.subject
    assert "mAP50: 0.900" in sent.body and "epochs:" in sent.body
    assert f"https://dumpsites.example.org/admin/training/trainingrun/{world.run.pk}/change/" in sent.body
    assert OutgoingMail.objects.get().status == "sent"

    end(world.run, ok=False)
    dispatch_due()
    assert "failed" in mail.outbox[1].subject and "reason: CUDA out of memory" in mail.outbox[1].body


def test_a_detection_run_is_mailed_with_what_it_found(mailed):
    world = mailed
    run = world.detection_run
    TrainingRun.objects.filter(pk=run.pk).update(
        export_summary={"detections": 12, "ignored": 2, "orthophotos": 1, "sites": {"recall": 0.75, "sites": 4}}
    )
    end(run)
    dispatch_due()
    body = mail.outbox[0].body
    assert "detections: 12 (2 in ignore zones)" in body and "site recall: 0.750 of 4 known sites" in body
    assert f"/admin/detection/detectionrun/{run.pk}/change/" in body


def test_only_the_owner_is_mailed_and_only_when_asked(mailed, settings):
    world = mailed
    admin = world.users["admin"]
    admin.email = "admin@example.org"
    admin.save()  # has an address but did not ask; sees the run
    end(world.run)
    assert list(OutgoingMail.objects.values_list("to", flat=True)) == ["owner@example.org"]
    world.client("owner").patch("/api/me/notifications/", {"email_on_run_end": False}, format="json")
    end(world.run, ok=False)
    assert OutgoingMail.objects.count() == 1


def test_a_refused_mail_is_tried_again_then_given_up(mailed, settings):
    settings.EMAIL_BACKEND = f"{__name__}.RefusingBackend"
    end(mailed.run)
    for _ in range(MAIL_ATTEMPTS):
        dispatch_due(rounds=1)
    queued = OutgoingMail.objects.get()
    assert queued.status == "failed" and queued.attempts == MAIL_ATTEMPTS
    assert "the SMTP server is down" in queued.error
