"""Subscriptions (made, changed, deleted by their owner), events written into the outbox in the transaction of what
they tell, redelivery by hand, and a user's e-mail setting."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from access.rules import Actor, grant, require
from audit.services import audit_record
from core.errors import ApplicationError

from .models import RUN_ENDS, Event, NotificationSettings, OutgoingMail, WebhookDelivery, WebhookSubscription
from .targets import check_target

# Postgres delivers a NOTIFY only when its transaction commits: the dispatchers wake then, not before.
CHANNEL = "dumpsite_outbox"
CREATOR_PERMS = [
    "notifications.view_webhooksubscription",
    "notifications.change_webhooksubscription",
    "notifications.delete_webhooksubscription",
]
MIN_SECRET = 16


@dataclass
class Notice:
    """What happened, as the emitting room tells it: the event, the objects (name -> (API basename, id)), the
    figures (for the body's ``data`` and the e-mail), who may be told (``audience``: may this user see it?), and
    the owner mailed about it when they asked to be (run ends only)."""

    event: str
    title: str
    objects: dict[str, tuple[str, int]]
    audience: Callable[[User], bool]
    data: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)
    page: str = ""  # the path of the object's page in the console
    owner: User | None = None


def public_url(path: str) -> str:
    return settings.DUMPSITE_PUBLIC_URL.rstrip("/") + path


def wake_dispatchers() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"NOTIFY {CHANNEL}")


@transaction.atomic
def notice_emit(notice: Notice) -> int:
    """Write ``notice`` into the outbox: a delivery for every active subscription to its event whose owner may see
    it, and the owner's mail where they asked for one. In the caller's transaction: a rolled-back change tells
    nobody, a committed one is sent (at least once) by a worker's dispatcher. Returns the deliveries written."""
    now = timezone.now()
    event_id = uuid.uuid4()
    objects = {
        name: {"id": pk, "url": public_url(reverse(f"{basename}-detail", args=[pk]))}
        for name, (basename, pk) in notice.objects.items()
    }
    subscriptions = WebhookSubscription.objects.filter(is_active=True, events__contains=[notice.event])
    deliveries = []
    for subscription in subscriptions.select_related("created_by"):
        owner = subscription.created_by
        if not owner.is_active or not notice.audience(owner):
            continue
        delivery_id = uuid.uuid4()
        body = {
            "id": str(delivery_id),
            "event": notice.event,
            "event_id": str(event_id),
            "time": now.isoformat(),
            "title": notice.title,
            "objects": objects,
            "data": notice.data,
        }
        deliveries.append(
            WebhookDelivery(
                id=delivery_id,
                subscription=subscription,
                event=notice.event,
                event_id=event_id,
                body=body,
                created_at=now,
                next_attempt_at=now,
            )
        )
    WebhookDelivery.objects.bulk_create(deliveries)
    mailed = _mail_owner(notice)
    if deliveries or mailed:
        wake_dispatchers()
    return len(deliveries)


def _mail_owner(notice: Notice) -> bool:
    owner = notice.owner
    if owner is None or notice.event not in RUN_ENDS or not owner.email or not owner.is_active:
        return False
    if not NotificationSettings.objects.filter(user=owner, email_on_run_end=True).exists():
        return False
    lines = [notice.title, ""]
    lines += [f"{name}: {value}" for name, value in notice.figures.items()]
    if notice.page:
        lines += ["", public_url(notice.page)]
    lines += ["", "You get this mail because you asked to be told when your runs end (your notification settings)."]
    mail_queue(to=owner.email, subject=f"[dump sites] {notice.title}", body="\n".join(lines))
    return True


def mail_queue(*, to: str, subject: str, body: str) -> OutgoingMail:
    """A mail into the outbox; sent by a worker's dispatcher once the caller's transaction commits."""
    return OutgoingMail.objects.create(
        to=to, subject=subject[:300].replace("\n", " "), body=body, next_attempt_at=timezone.now()
    )


def _check_events(events: Sequence[str]) -> list[str]:
    unknown = sorted(set(events) - set(Event.values))
    if unknown:
        raise ApplicationError(
            f"Unknown events: {', '.join(unknown)}.", {"events": f"one of {', '.join(Event.values)}"}
        )
    if not events:
        raise ApplicationError("A subscription needs at least one event.", {"events": "empty"})
    return sorted(set(events))


def _check_secret(secret: str) -> str:
    if len(secret) < MIN_SECRET or len(secret) > 200:
        raise ApplicationError(
            f"A secret has {MIN_SECRET} to 200 characters; leave it out and one is made for you.", {"secret": "length"}
        )
    return secret


@transaction.atomic
def webhook_subscription_create(
    *, user: Actor, url: str, events: Sequence[str], name: str = "", secret: str | None = None
) -> WebhookSubscription:
    """A subscription of ``user``'s (who needs ``notifications.add_webhooksubscription``): its URL must reach a
    public address now (and is checked again at every delivery). Without a ``secret``, one is made; either way it
    is returned on the object once and never shown again."""
    if user is None:
        raise PermissionDenied("A subscription belongs to a user.")
    require(user, "notifications.add_webhooksubscription", message="You may not subscribe to webhooks.")
    check_target(url)
    subscription = WebhookSubscription.objects.create(
        name=name[:200],
        url=url.strip(),
        events=_check_events(events),
        secret=_check_secret(secret) if secret is not None else secrets.token_urlsafe(32),
        created_by=user,
    )
    grant(user, CREATOR_PERMS, subscription)
    audit_record(action="created", obj=subscription, actor=user, url=subscription.url, events=subscription.events)
    return subscription


@transaction.atomic
def webhook_subscription_update(
    *, subscription: WebhookSubscription, user: Actor, **changes: Any
) -> WebhookSubscription:
    """Change the name, URL (checked again), events, secret or whether it is active. Enabling a disabled
    subscription starts its failure count afresh."""
    require(user, "notifications.change_webhooksubscription", subscription, message="You may not change this webhook.")
    subscription = WebhookSubscription.objects.select_for_update().get(pk=subscription.pk)
    if "url" in changes:
        check_target(changes["url"])
        subscription.url = changes["url"].strip()
    if "events" in changes:
        subscription.events = _check_events(changes["events"])
    if "name" in changes:
        subscription.name = changes["name"][:200]
    if "secret" in changes:
        subscription.secret = _check_secret(changes["secret"])
    if "is_active" in changes and changes["is_active"] != subscription.is_active:
        subscription.is_active = bool(changes["is_active"])
        subscription.failing_since = None
        subscription.disabled_at = None if subscription.is_active else timezone.now()
        subscription.disabled_reason = "" if subscription.is_active else f"Disabled by {user}."
    subscription.save()
    audit_record(action="changed", obj=subscription, actor=user, fields=sorted(changes))
    return subscription


@transaction.atomic
def webhook_subscription_delete(*, subscription: WebhookSubscription, user: Actor) -> None:
    require(user, "notifications.delete_webhooksubscription", subscription, message="You may not delete this webhook.")
    audit_record(action="deleted", obj=subscription, actor=user, url=subscription.url)
    subscription.delete()


@transaction.atomic
def webhook_delivery_redeliver(*, delivery: WebhookDelivery, user: Actor) -> WebhookDelivery:
    """Send a delivery's event again, as a new delivery (its own id, the same ``event_id`` and content)."""
    subscription = delivery.subscription
    require(user, "notifications.change_webhooksubscription", subscription, message="You may not redeliver this.")
    if not subscription.is_active:
        raise ApplicationError(
            f"Webhook #{subscription.pk} is disabled; enable it before redelivering.", {"subscription": "disabled"}
        )
    now = timezone.now()
    new_id = uuid.uuid4()
    again = WebhookDelivery.objects.create(
        id=new_id,
        subscription=subscription,
        event=delivery.event,
        event_id=delivery.event_id,
        body={**delivery.body, "id": str(new_id), "time": now.isoformat()},
        created_at=now,
        next_attempt_at=now,
        redelivery_of=delivery,
    )
    audit_record(action="redelivered", obj=subscription, actor=user, delivery=str(delivery.pk), new=str(new_id))
    wake_dispatchers()
    return again


@transaction.atomic
def notification_settings_update(*, user: User, email_on_run_end: bool) -> NotificationSettings:
    """A user's own setting: mailed when one of their runs ends (their account needs an e-mail address)."""
    if email_on_run_end and not user.email:
        raise ApplicationError("Your account has no e-mail address to send to.", {"email_on_run_end": "no address"})
    found, _ = NotificationSettings.objects.update_or_create(user=user, defaults={"email_on_run_end": email_on_run_end})
    return found
