"""Webhooks and e-mail settings in the console: made through the service (refusals on the form, the secret shown
once), each owner's own, the delivery log with each attempt, redelivery and disabling as actions."""

from __future__ import annotations

import pytest

from notifications.dispatcher import dispatch_due
from notifications.models import NotificationSettings, WebhookDelivery, WebhookSubscription
from tests.notifications.receiver import Receiver
from training.models import TrainingRun
from training.services.lifecycle import training_run_fail

ADD = "/admin/notifications/webhooksubscription/add/"


@pytest.fixture
def receiver(settings):
    settings.DUMPSITE_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    r = Receiver(answers=[500])
    yield r
    r.close()


def test_a_webhook_made_in_the_console_shows_its_secret_once_and_refusals_on_the_form(world, receiver):
    client = world.staff_client("owner")
    form = {"name": "ci", "url": "http://10.0.0.8/in", "events": ["run.failed"], "secret": ""}
    page = client.post(ADD, form)
    assert page.status_code == 200 and "10.0.0.8, a private address" in page.content.decode()
    assert not WebhookSubscription.objects.exists()

    page = client.post(ADD, {**form, "url": receiver.url}, follow=True)
    made = WebhookSubscription.objects.get()
    assert made.created_by == world.users["owner"] and made.events == ["run.failed"]
    assert f"shown this once: {made.secret}" in page.content.decode()
    assert made.secret not in client.get(f"/admin/notifications/webhooksubscription/{made.pk}/change/").content.decode()

    # The run ends, the receiver answers 500: the subscription's page and the delivery's show it.
    TrainingRun.objects.filter(pk=world.run.pk).update(status="running")
    training_run_fail(run_id=world.run.pk, message="boom")
    dispatch_due(rounds=1)
    delivery = WebhookDelivery.objects.get()
    page = client.get(f"/admin/notifications/webhooksubscription/{made.pk}/change/").content.decode()
    assert f"/admin/notifications/webhookdelivery/{delivery.pk}/change/" in page and "run.failed" in page
    page = client.get(f"/admin/notifications/webhookdelivery/{delivery.pk}/change/").content.decode()
    assert "<td>500</td>" in page and "&quot;event&quot;: &quot;run.failed&quot;" in page

    # Not another user's (an Administrator sees every subscription).
    peer = world.staff_client("other_trainer")
    listing = peer.get("/admin/notifications/webhooksubscription/").content.decode()
    assert f"/admin/notifications/webhooksubscription/{made.pk}/change/" not in listing
    assert peer.get(f"/admin/notifications/webhookdelivery/{delivery.pk}/change/").status_code in (302, 404)
    assert (
        world.staff_client("admin").get(f"/admin/notifications/webhookdelivery/{delivery.pk}/change/").status_code
        == 200
    )

    # Redeliver, then disable, as actions.
    client.post(
        "/admin/notifications/webhookdelivery/", {"action": "redeliver", "_selected_action": [str(delivery.pk)]}
    )
    assert WebhookDelivery.objects.filter(redelivery_of=delivery).count() == 1
    client.post("/admin/notifications/webhooksubscription/", {"action": "disable", "_selected_action": [str(made.pk)]})
    made.refresh_from_db()
    assert not made.is_active and made.disabled_reason == "Disabled by owner."
    peer.post("/admin/notifications/webhooksubscription/", {"action": "enable", "_selected_action": [str(made.pk)]})
    made.refresh_from_db()
    assert not made.is_active  # not theirs to enable


def test_each_user_edits_only_their_own_mail_setting(world):
    client = world.staff_client("owner")
    page = client.post("/admin/notifications/notificationsettings/add/", {"email_on_run_end": "on"})
    assert page.status_code == 200 and "no e-mail address" in page.content.decode()
    owner = world.users["owner"]
    owner.email = "owner@example.org"
    owner.save()
    client.post("/admin/notifications/notificationsettings/add/", {"email_on_run_end": "on"})
    assert NotificationSettings.objects.get(user=owner).email_on_run_end
    listing = world.staff_client("admin").get("/admin/notifications/notificationsettings/").content.decode()
    assert "owner" not in listing.split("result_list")[-1]
    assert world.staff_client("admin").get(
        f"/admin/notifications/notificationsettings/{owner.pk}/change/"
    ).status_code in (
        302,
        404,
    )
