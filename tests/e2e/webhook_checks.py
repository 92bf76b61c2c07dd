"""What a real worker tells about a real run: the events reach a receiver on the loopback address, signed, after
the errors it answered first, soon after the run's end committed; and the owner's mail goes out."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from notifications.models import OutgoingMail, WebhookDelivery
from notifications.services import notification_settings_update, webhook_subscription_create
from tests.conftest import wait_for
from tests.notifications.receiver import Receiver, verify

EVENTS = ["run.succeeded", "run.failed", "run.cancelled", "evaluation.finished", "detection.finished"]


def subscribe_operator(settings) -> tuple[Receiver, str]:
    """The operator's webhook to a receiver that answers 500 twice before it takes anything, and their mail."""
    settings.DUMPSITE_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]  # as the worker's (tests.conftest.worker_env)
    operator = get_user_model().objects.get(username="operator")
    operator.email = "operator@example.org"
    operator.save()
    notification_settings_update(user=operator, email_on_run_end=True)
    receiver = Receiver(answers=[500, 500])
    subscription = webhook_subscription_create(user=operator, url=receiver.url, events=EVENTS, name="e2e")
    return receiver, subscription.secret


def check_run_end_told(receiver: Receiver, secret: str, run, worker) -> None:
    """The run's end reached the receiver signed, on the third try (after two 500s), within seconds of its end."""
    delivery = wait_for(
        lambda: WebhookDelivery.objects.filter(body__objects__run__id=run.pk, status="delivered").first(),
        timeout=30,
        message="the run's end to be delivered",
    )
    sent = [r for r in receiver.received if r.headers["X-Dumpsite-Delivery"] == str(delivery.pk)]
    assert [a.status_code for a in delivery.attempt_log.order_by("started_at")] == [500, 500, 200]
    assert len(sent) == 3 and all(verify(secret, r.headers, r.body) for r in sent)
    body = sent[-1].json
    assert body["event"] == "run.succeeded" and body["data"]["bbox_mAP_50"] == run.trained_model.bbox_mAP_50
    first_try = sent[0].at - run.finished_at.timestamp()
    assert -1 < first_try < 5, first_try  # the worker's clock and this one are the same machine's
    mail = wait_for(
        lambda: OutgoingMail.objects.filter(subject__contains=f"#{run.pk} ", status="sent").first(),
        timeout=30,
        message="the owner's mail",
    )
    assert "mAP50: " in mail.body and mail.to == "operator@example.org"
    assert mail.subject in worker.output()  # the console backend printed it in the worker's output


def check_other_kinds_told(receiver: Receiver, secret: str) -> None:
    """Evaluation and detection runs ended too: each told once it ended, signed."""
    for event in ("evaluation.finished", "detection.finished"):
        told = wait_for(lambda e=event: receiver.of_event(e), timeout=30, message=f"a {event} delivery")
        assert all(verify(secret, r.headers, r.body) for r in told)
        assert {r.json["data"]["status"] for r in told} >= {"succeeded"}
    receiver.close()
