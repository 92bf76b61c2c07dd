"""Sending what the outbox holds: each delivery signed and posted to the address its URL was checked to resolve
to (no redirects, short timeouts, only an excerpt of the answer kept), retried with exponential backoff until its
retry window ends; a subscription failing for a day is disabled and its owner told. Mails go through Django's
e-mail backend. Claims are leases (``FOR UPDATE SKIP LOCKED``, then a time): several dispatchers share one outbox,
and a dispatcher that dies mid-send leaves the delivery to be sent again (at least once)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import urllib3
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from audit.services import audit_record

from .models import DeliveryAttempt, OutgoingMail, WebhookDelivery, WebhookSubscription
from .services import mail_queue
from .targets import Target, TargetRefused, check_target

logger = logging.getLogger(__name__)
Status = WebhookDelivery.Status
LEASE = timedelta(seconds=60)  # a claimed delivery is another dispatcher's again after this
EXCERPT = 500  # characters of an answer kept
MAIL_ATTEMPTS = 5
USER_AGENT = "dumpsite-webhooks/1"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``X-Signature``: HMAC-SHA256 over ``"<timestamp>." + body`` with the subscription's secret."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


@dataclass
class Answer:
    status_code: int | None
    error: str
    excerpt: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(target: Target, body: bytes, headers: dict[str, str]) -> Answer:
    """POST ``body`` to the target's checked address, naming its host (Host header, TLS name and certificate
    check); redirects are answers, not followed."""
    timeout = urllib3.Timeout(
        connect=settings.DUMPSITE_WEBHOOK_CONNECT_TIMEOUT,
        read=settings.DUMPSITE_WEBHOOK_READ_TIMEOUT,
        total=settings.DUMPSITE_WEBHOOK_CONNECT_TIMEOUT + settings.DUMPSITE_WEBHOOK_READ_TIMEOUT,
    )
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            timeout=timeout,
            retries=False,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            maxsize=1,
        )
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, retries=False, maxsize=1)
    began = time.monotonic()
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Host": target.host_header},
            redirect=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            excerpt = response.read(EXCERPT * 4, decode_content=False).decode("utf-8", "replace")[:EXCERPT]
        finally:
            response.release_conn()
        status, error = response.status, ""
        if 300 <= status < 400:
            error = f"answered a redirect ({status}) to {response.headers.get('Location', '?')[:200]}: not followed"
    except urllib3.exceptions.HTTPError as exc:
        status, error, excerpt = None, f"{type(exc).__name__}: {exc}"[:500], ""
    finally:
        pool.close()
    return Answer(status, error, excerpt, int((time.monotonic() - began) * 1000))


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: the base, doubled each time, at most the cap."""
    base, cap = settings.DUMPSITE_WEBHOOK_RETRY_BASE, settings.DUMPSITE_WEBHOOK_RETRY_CAP
    return min(cap, base * 2 ** max(0, attempts - 1))


def deliveries_claim(limit: int = 20) -> list[WebhookDelivery]:
    """Pending deliveries that are due, leased to this dispatcher."""
    now = timezone.now()
    with transaction.atomic():
        due = list(
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=Status.PENDING, next_attempt_at__lte=now)
            .select_related("subscription", "subscription__created_by")
            .order_by("next_attempt_at")[:limit]
        )
        WebhookDelivery.objects.filter(pk__in=[d.pk for d in due]).update(next_attempt_at=now + LEASE)
    return due


def delivery_send(delivery: WebhookDelivery) -> Answer:
    """One attempt of a claimed delivery, recorded in its log; then delivered, due again later, or failed."""
    subscription = delivery.subscription
    started = timezone.now()
    if not subscription.is_active:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=Status.FAILED, next_attempt_at=None, last_error="The subscription is disabled."
        )
        return Answer(None, "The subscription is disabled.", "", 0)
    body = json.dumps(delivery.body, separators=(",", ":"), sort_keys=True).encode()
    stamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Dumpsite-Event": delivery.event,
        "X-Dumpsite-Delivery": str(delivery.pk),
        "X-Dumpsite-Timestamp": str(stamp),
        "X-Signature": sign(subscription.secret, stamp, body),
    }
    try:
        answer = post(check_target(subscription.url), body, headers)
    except TargetRefused as exc:
        answer = Answer(None, f"refused: {exc.message}"[:500], "", 0)
    DeliveryAttempt.objects.create(
        delivery=delivery,
        started_at=started,
        duration_ms=answer.duration_ms,
        status_code=answer.status_code,
        error=answer.error,
        response_excerpt=answer.excerpt,
    )
    _record(delivery, answer)
    return answer


def _record(delivery: WebhookDelivery, answer: Answer) -> None:
    now = timezone.now()
    attempts = delivery.attempts + 1
    fields = dict(attempts=attempts, last_status_code=answer.status_code, last_error=answer.error)
    if answer.ok:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=Status.DELIVERED, delivered_at=now, next_attempt_at=None, **fields
        )
        WebhookSubscription.objects.filter(pk=delivery.subscription_id).update(failing_since=None)
        return
    retry_at = now + timedelta(seconds=retry_delay(attempts))
    window_end = delivery.created_at + timedelta(seconds=settings.DUMPSITE_WEBHOOK_RETRY_FOR)
    if retry_at > window_end:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status=Status.FAILED, next_attempt_at=None, **fields)
    else:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=retry_at, **fields)
    WebhookSubscription.objects.filter(pk=delivery.subscription_id).update(
        failing_since=Coalesce(F("failing_since"), now)
    )
    _disable_if_failing(delivery.subscription_id, now)


def _disable_if_failing(subscription_id: int, now: datetime) -> None:
    """A subscription whose deliveries failed for ``DUMPSITE_WEBHOOK_DISABLE_AFTER`` seconds, with no success in
    between, is disabled (once: a conditional update), its pending deliveries end, and its owner is told."""
    since = now - timedelta(seconds=settings.DUMPSITE_WEBHOOK_DISABLE_AFTER)
    with transaction.atomic():
        hours = settings.DUMPSITE_WEBHOOK_DISABLE_AFTER / 3600
        reason = f"Every delivery failed for {hours:g} h; disabled by the platform."
        disabled = WebhookSubscription.objects.filter(
            pk=subscription_id, is_active=True, failing_since__lte=since
        ).update(is_active=False, disabled_at=now, disabled_reason=reason)
        if not disabled:
            return
        subscription = WebhookSubscription.objects.select_related("created_by").get(pk=subscription_id)
        WebhookDelivery.objects.filter(subscription=subscription, status=Status.PENDING).update(
            status=Status.FAILED, next_attempt_at=None, last_error="The subscription was disabled."
        )
        audit_record(action="disabled", obj=subscription, reason=reason)
        owner = subscription.created_by
        if owner.email:
            mail_queue(
                to=owner.email,
                subject=f"[dump sites] Webhook #{subscription.pk} disabled: its deliveries failed",
                body=(
                    f"Your webhook #{subscription.pk} ({subscription.url}) was disabled: {reason}\n\n"
                    "Its delivery log (admin or API) shows what the receiver answered. Fix the receiver, then enable "
                    "the webhook again and redeliver what it missed."
                ),
            )
    logger.warning("webhook %s disabled: %s", subscription_id, reason)


def mails_send_due(limit: int = 20) -> int:
    """Send due mails through Django's e-mail backend; a failure is tried again later (five times in all)."""
    now = timezone.now()
    with transaction.atomic():
        due = list(
            OutgoingMail.objects.select_for_update(skip_locked=True)
            .filter(status=OutgoingMail.Status.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at")[:limit]
        )
        OutgoingMail.objects.filter(pk__in=[m.pk for m in due]).update(next_attempt_at=now + LEASE)
    for mail in due:
        try:
            send_mail(mail.subject, mail.body, None, [mail.to])
        except Exception as exc:  # noqa: BLE001 - any backend's failure is recorded and tried again
            attempts = mail.attempts + 1
            gave_up = attempts >= MAIL_ATTEMPTS
            OutgoingMail.objects.filter(pk=mail.pk).update(
                attempts=attempts,
                error=f"{type(exc).__name__}: {exc}"[:500],
                status=OutgoingMail.Status.FAILED if gave_up else OutgoingMail.Status.PENDING,
                next_attempt_at=None if gave_up else timezone.now() + timedelta(seconds=retry_delay(attempts)),
            )
        else:
            OutgoingMail.objects.filter(pk=mail.pk).update(
                status=OutgoingMail.Status.SENT,
                sent_at=timezone.now(),
                attempts=mail.attempts + 1,
                next_attempt_at=None,
            )
    return len(due)
