"""Webhooks for real: events written in the transaction of what they tell, posted to a real receiver on the
loopback address, signed, retried with backoff, logged, refused where they may not go, redelivered by hand, and a
subscription that keeps failing disabled with its owner told."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.db import transaction

from audit.models import AuditEvent
from datasets.models import DatasetImport
from datasets.notices import import_end
from models_registry.services import trained_model_publish, trained_model_unpublish
from notifications.delivery import retry_delay
from notifications.dispatcher import Dispatcher, dispatch_due
from notifications.models import OutgoingMail, WebhookDelivery, WebhookSubscription
from notifications.services import webhook_subscription_create
from tests.conftest import wait_for
from tests.notifications.receiver import Receiver, verify
from tests.notifications.test_targets import fake_dns
from training.models import TrainingRun
from training.services import training_run_create
from training.services.lifecycle import training_run_fail, training_run_succeed

EVENTS = ["run.succeeded", "run.failed", "model.published", "model.unpublished", "import.finished"]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def loopback(settings):
    """The tests' receiver is on 127.0.0.1: the site allows that one address; retries come quickly."""
    settings.DUMPSITE_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.DUMPSITE_WEBHOOK_RETRY_BASE = 0.2
    settings.DUMPSITE_WEBHOOK_READ_TIMEOUT = 1.0
    return settings


def subscribe(world, role: str, receiver: Receiver, events=EVENTS) -> WebhookSubscription:
    return webhook_subscription_create(user=world.users[role], url=receiver.url, events=events, name=role)


def end_run(run: TrainingRun, *, ok: bool = True) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    assert (training_run_succeed if ok else training_run_fail)(run_id=run.pk, **({} if ok else {"message": "boom"}))


def owned_run(world) -> TrainingRun:
    """Another running run of the owner's (who may see it, as the creator of a run may)."""
    run = training_run_create(dataset=world.dataset, parameters={"epochs": 1}, created_by=world.users["owner"])
    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    return run


def test_a_run_end_is_signed_delivered_and_retried_after_errors(world, loopback, receiver):
    owner, admin = subscribe(world, "owner", receiver), subscribe(world, "admin", receiver)
    peer = subscribe(world, "other_trainer", receiver)  # may not see the owner's run: never told
    receiver.answers = [500, 503]

    end_run(world.run)
    deliveries = WebhookDelivery.objects.filter(event="run.succeeded")
    assert {d.subscription_id for d in deliveries} == {owner.pk, admin.pk}
    assert len({d.event_id for d in deliveries}) == 1  # one event, a delivery per subscription

    assert dispatch_due(rounds=1) == 2
    assert [r.headers["X-Dumpsite-Event"] for r in receiver.received] == ["run.succeeded"] * 2
    assert set(WebhookDelivery.objects.values_list("status", "attempts", "last_status_code")) == {
        ("pending", 1, 500),
        ("pending", 1, 503),
    }
    time.sleep(loopback.DUMPSITE_WEBHOOK_RETRY_BASE + 0.1)
    assert dispatch_due(rounds=1) == 2
    assert set(WebhookDelivery.objects.values_list("status", "attempts")) == {("delivered", 2)}
    assert not WebhookSubscription.objects.filter(failing_since__isnull=False).exists()

    secrets = {s.pk: s.secret for s in (owner, admin, peer)}
    for delivery in WebhookDelivery.objects.all():
        sent = [r for r in receiver.received if r.headers["X-Dumpsite-Delivery"] == str(delivery.pk)]
        assert len(sent) == 2  # the first try and the retry: the same delivery, the same id
        for request in sent:
            assert verify(secrets[delivery.subscription_id], request.headers, request.body)
            assert not verify(secrets[peer.pk], request.headers, request.body)
            assert request.path == "/hooks/dumpsite" and request.headers["Content-Type"] == "application/json"
        body = sent[-1].json
        assert body["id"] == str(delivery.pk) and body["event"] == "run.succeeded"
        assert body["event_id"] == str(delivery.event_id)
        assert body["objects"]["run"] == {
            "id": world.run.pk,
            "url": f"http://localhost:8000/api/training-runs/{world.run.pk}/",
        }
        assert body["objects"]["model"]["id"] == world.model.pk and body["data"]["bbox_mAP_50"] == 0.9
        log = list(delivery.attempt_log.order_by("started_at").values_list("status_code", flat=True))
        assert len(log) == 2 and log[0] in (500, 503) and log[1] == 200

    # A tampered body or an old timestamp fails the documented check.
    request = receiver.received[0]
    secret = secrets[WebhookDelivery.objects.get(pk=request.headers["X-Dumpsite-Delivery"]).subscription_id]
    assert not verify(secret, request.headers, request.body.replace(b"succeeded", b"failed"))
    assert not verify(secret, request.headers, request.body, now=request.at + 301)


def test_an_end_that_rolls_back_tells_nobody(world, loopback, receiver):
    subscribe(world, "owner", receiver)
    with pytest.raises(RuntimeError), transaction.atomic():
        end_run(world.run)
        assert WebhookDelivery.objects.count() == 1
        raise RuntimeError("the transaction that ended the run failed")
    assert WebhookDelivery.objects.count() == 0 and dispatch_due(rounds=1) == 0 and receiver.received == []


def test_each_event_reaches_those_who_may_see_its_object(world, loopback, receiver):
    subs = {role: subscribe(world, role, receiver) for role in ("viewer", "owner", "other_trainer", "admin")}

    def told(event):
        return {d.subscription.name for d in WebhookDelivery.objects.filter(event=event).select_related("subscription")}

    end_run(world.run, ok=False)
    assert told("run.failed") == {"owner", "admin"}
    trained_model_unpublish(model=world.published, user=world.users["admin"])
    assert told("model.unpublished") == {"viewer", "owner", "other_trainer", "admin"}  # those who saw it published
    trained_model_publish(model=world.published, user=world.users["admin"])
    assert told("model.published") == {"viewer", "owner", "other_trainer", "admin"}  # published: seen by all roles

    job = DatasetImport.objects.create(key="x1", status="running", created_by=world.users["owner"], kind="coco_zip")
    assert import_end(job.pk, status="succeeded", images_imported=7) == 1
    assert import_end(job.pk, status="failed") == 0  # ended once
    assert told("import.finished") == {"owner", "admin"}  # an import is its uploader's (and dataset changers')
    body = WebhookDelivery.objects.filter(event="import.finished").first().body
    assert body["data"]["images_imported"] == 7 and body["objects"]["import"]["id"] == job.pk

    # Only the events subscribed to; a disabled subscription hears nothing.
    WebhookSubscription.objects.filter(pk=subs["admin"].pk).update(events=["model.published"])
    WebhookSubscription.objects.filter(pk=subs["owner"].pk).update(is_active=False)
    training_run_succeed(run_id=owned_run(world).pk)
    assert not WebhookDelivery.objects.filter(event="run.succeeded").exists()


def test_a_private_address_is_refused_at_subscription_and_when_dns_changes_before_delivery(
    world, receiver, monkeypatch
):
    client = world.client("owner")
    answer = client.post("/api/webhooks/", {"url": receiver.url, "events": ["run.failed"]}, format="json")
    assert answer.status_code == 400 and "loopback" in answer.json()["message"]
    answer = client.post("/api/webhooks/", {"url": "http://10.1.2.3/in", "events": ["run.failed"]}, format="json")
    assert answer.status_code == 400 and "private address" in answer.json()["message"]
    assert not WebhookSubscription.objects.exists()

    dns = {"hooks.example.org": ["93.184.216.34"]}
    fake_dns(monkeypatch, dns)
    answer = client.post(
        "/api/webhooks/", {"url": "http://hooks.example.org/in", "events": ["run.failed"]}, format="json"
    )
    assert answer.status_code == 201, answer.json()
    dns["hooks.example.org"] = ["10.0.0.5"]  # the name now points inside
    end_run(world.run, ok=False)
    sent = []
    monkeypatch.setattr("notifications.delivery.post", lambda *a, **k: sent.append(a))
    assert dispatch_due(rounds=1) == 1
    delivery = WebhookDelivery.objects.get()
    attempt = delivery.attempt_log.get()
    assert sent == [] and attempt.status_code is None
    assert attempt.error.startswith("refused:") and "10.0.0.5, a private address" in attempt.error
    assert delivery.status == "pending" and delivery.next_attempt_at is not None  # tried again later, checked again


def test_the_post_goes_to_the_address_that_was_checked_naming_the_host(world, loopback, receiver, monkeypatch):
    port = receiver.server.server_address[1]
    fake_dns(monkeypatch, {"receiver.test": ["127.0.0.1"]})
    webhook_subscription_create(
        user=world.users["owner"], url=f"http://receiver.test:{port}/in?token=1", events=["run.failed"]
    )
    end_run(world.run, ok=False)
    dispatch_due(rounds=1)
    (request,) = receiver.received
    assert request.headers["Host"] == f"receiver.test:{port}" and request.path == "/in?token=1"


def test_redirects_are_not_followed_and_answers_are_cut_to_an_excerpt(world, loopback, receiver):
    subscribe(world, "owner", receiver)
    receiver.redirect_to = "http://127.0.0.1:9/elsewhere"
    receiver.answer_bytes = 1_000_000
    end_run(world.run, ok=False)
    dispatch_due(rounds=1)
    assert len(receiver.received) == 1  # the redirect's target was never asked
    attempt = WebhookDelivery.objects.get().attempt_log.get()
    assert attempt.status_code == 302 and "not followed" in attempt.error and "127.0.0.1:9/elsewhere" in attempt.error
    assert attempt.response_excerpt == "x" * 500
    assert WebhookDelivery.objects.get().status == "pending"


def test_a_slow_receiver_times_out(world, loopback, receiver):
    loopback.DUMPSITE_WEBHOOK_READ_TIMEOUT = 0.3
    subscribe(world, "owner", receiver)
    receiver.delay = 1.5
    end_run(world.run, ok=False)
    began = time.monotonic()
    dispatch_due(rounds=1)
    assert time.monotonic() - began < 1.4
    attempt = WebhookDelivery.objects.get().attempt_log.get()
    assert attempt.status_code is None and "timed out" in attempt.error.lower()


def test_backoff_doubles_up_to_its_cap_and_a_delivery_gives_up_after_its_window(world, loopback, receiver):
    loopback.DUMPSITE_WEBHOOK_RETRY_BASE, loopback.DUMPSITE_WEBHOOK_RETRY_CAP = 10, 3600
    assert [retry_delay(n) for n in (1, 2, 3, 4, 9, 20)] == [10, 20, 40, 80, 2560, 3600]
    loopback.DUMPSITE_WEBHOOK_RETRY_FOR = 5  # the next try would be after the window
    subscribe(world, "owner", receiver)
    receiver.answers = [500]
    end_run(world.run, ok=False)
    dispatch_due(rounds=1)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 1, None)


def test_a_subscription_failing_for_a_day_is_disabled_and_its_owner_told(world, loopback, receiver):
    loopback.DUMPSITE_WEBHOOK_DISABLE_AFTER = 0  # "a day" of failures, at once
    world.users["owner"].email = "owner@example.org"
    world.users["owner"].save()
    subscription = subscribe(world, "owner", receiver)
    receiver.answers = [500, 500]
    end_run(world.run, ok=False)
    trained_model_unpublish(model=world.published, user=world.users["admin"])  # a second event, pending meanwhile
    dispatch_due(rounds=1)
    subscription.refresh_from_db()
    assert not subscription.is_active and "failed" in subscription.disabled_reason
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"failed"}
    mail = OutgoingMail.objects.get(to="owner@example.org")
    assert f"Webhook #{subscription.pk} disabled" in mail.subject and receiver.url in mail.body
    assert AuditEvent.objects.filter(action="disabled", object_type="webhooksubscription").exists()

    # Its owner enables it again: the failure streak starts afresh, and what it missed can be redelivered.
    client = world.client("owner")
    answer = client.patch(f"/api/webhooks/{subscription.pk}/", {"is_active": True}, format="json")
    assert answer.status_code == 200 and answer.json()["is_active"] and answer.json()["failing_since"] is None
    missed = WebhookDelivery.objects.filter(event="run.failed").get()
    answer = client.post(f"/api/webhook-deliveries/{missed.pk}/redeliver/")
    assert answer.status_code == 201
    again = WebhookDelivery.objects.get(pk=answer.json()["id"])
    assert again.event_id == missed.event_id and again.redelivery_of == missed and again.body["id"] == str(again.pk)
    dispatch_due(rounds=1)
    again.refresh_from_db()
    assert again.status == "delivered" and receiver.received[-1].json["event_id"] == str(missed.event_id)


def test_the_delivery_log_and_redelivery_through_the_api(world, loopback, receiver):
    subscription = subscribe(world, "owner", receiver)
    receiver.answers = [500]
    end_run(world.run, ok=False)
    dispatch_due(rounds=1)
    delivery = WebhookDelivery.objects.get()
    owner, peer, admin = (world.client(r) for r in ("owner", "other_trainer", "admin"))

    log = owner.get(f"/api/webhooks/{subscription.pk}/deliveries/").json()["results"]
    assert [(d["id"], d["status"], d["last_status_code"]) for d in log] == [(str(delivery.pk), "pending", 500)]
    detail = owner.get(f"/api/webhook-deliveries/{delivery.pk}/").json()
    (attempt,) = detail["attempt_log"]
    assert attempt["status_code"] == 500 and attempt["response_excerpt"] == "xx" and attempt["duration_ms"] >= 0
    assert (
        detail["body"]["event"] == "run.failed"
        and "secret" not in owner.get(f"/api/webhooks/{subscription.pk}/").json()
    )

    assert peer.get(f"/api/webhook-deliveries/{delivery.pk}/").status_code == 404
    assert peer.post(f"/api/webhook-deliveries/{delivery.pk}/redeliver/").status_code == 404
    assert peer.get("/api/webhook-deliveries/").json()["results"] == []
    assert admin.get(f"/api/webhook-deliveries/{delivery.pk}/").status_code == 200  # Administrators help owners
    assert owner.get(f"/api/webhook-deliveries/{uuid.uuid4()}/").status_code == 404


def test_subscriptions_through_the_api(world, loopback, receiver):
    client = world.client("owner")
    made = client.post("/api/webhooks/", {"url": receiver.url, "events": ["run.failed"], "name": "ci"}, format="json")
    assert made.status_code == 201 and len(made.json()["secret"]) >= 32  # made for it, shown this once
    pk = made.json()["id"]
    assert "secret" not in client.get(f"/api/webhooks/{pk}/").json()
    assert WebhookSubscription.objects.get(pk=pk).secret == made.json()["secret"]
    chosen = client.post(
        "/api/webhooks/", {"url": receiver.url, "events": ["run.failed"], "secret": "s" * 20}, format="json"
    )
    assert chosen.status_code == 201 and chosen.json()["secret"] == "s" * 20

    for body, field in (
        ({"url": receiver.url, "events": ["run.exploded"]}, "events"),
        ({"url": receiver.url, "events": []}, "events"),
        ({"url": receiver.url, "events": ["run.failed"], "secret": "short"}, "secret"),
        ({"url": "ftp://example.org/", "events": ["run.failed"]}, "url"),
    ):
        answer = client.post("/api/webhooks/", body, format="json")
        assert answer.status_code == 400 and set(answer.json()) == {"code", "message", "errors"}, answer.json()
        assert field in answer.json()["errors"] or field in answer.json()["message"].lower(), answer.json()

    assert client.patch(f"/api/webhooks/{pk}/", {"url": "http://10.9.9.9/"}, format="json").status_code == 400
    assert client.patch(f"/api/webhooks/{pk}/", {"events": ["import.finished"]}, format="json").json()["events"] == [
        "import.finished"
    ]
    assert world.client("other_trainer").get(f"/api/webhooks/{pk}/").status_code == 404
    assert world.client("viewer").delete(f"/api/webhooks/{pk}/").status_code == 404
    assert client.delete(f"/api/webhooks/{pk}/").status_code == 204
    assert [e.action for e in AuditEvent.objects.filter(object_type="webhooksubscription", object_id=pk)] == [
        "deleted",
        "changed",
        "created",
    ]


def test_the_dispatcher_sends_as_soon_as_the_event_commits(
    transactional_db, roles, make_dataset, tmp_path, loopback, receiver
):
    """The worker's dispatcher thread, polling only every 30 s, is woken by the commit itself (LISTEN/NOTIFY)."""
    from tests.world import build_world

    world = build_world(make_dataset, tmp_path)
    subscribe(world, "owner", receiver)
    dispatcher = Dispatcher(poll=30)
    dispatcher.start()
    try:
        time.sleep(0.5)  # it listens
        committed = time.monotonic()
        end_run(world.run, ok=False)
        wait_for(lambda: receiver.received, timeout=5, interval=0.05, message="the delivery")
        assert receiver.received[0].at - time.time() + (time.monotonic() - committed) < 2.0
        wait_for(lambda: WebhookDelivery.objects.filter(status="delivered").exists(), timeout=5, message="its record")
    finally:
        dispatcher.stop()
        dispatcher.join(timeout=35)
    assert not dispatcher.is_alive()


def test_two_dispatchers_never_send_one_delivery_twice_at_once(
    transactional_db, roles, make_dataset, tmp_path, loopback, receiver
):
    from tests.world import build_world

    world = build_world(make_dataset, tmp_path)
    subscribe(world, "owner", receiver)
    receiver.delay = 0.3
    for _ in range(6):
        training_run_fail(run_id=owned_run(world).pk, message="boom")
    counts = []

    def dispatcher():
        from django.db import connection

        counts.append(dispatch_due())
        connection.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 6 and len(receiver.received) == 6
    assert len({r.headers["X-Dumpsite-Delivery"] for r in receiver.received}) == 6
