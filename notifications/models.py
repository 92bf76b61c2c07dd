"""Webhook subscriptions, their deliveries (the outbox) and each attempt's log; a user's e-mail setting and the
mails waiting to go out."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase


class Event(models.TextChoices):
    RUN_SUCCEEDED = "run.succeeded", "Training run succeeded"
    RUN_FAILED = "run.failed", "Training run failed"
    RUN_CANCELLED = "run.cancelled", "Training run cancelled"
    EVALUATION_FINISHED = "evaluation.finished", "Evaluation finished"
    DETECTION_FINISHED = "detection.finished", "Detection run finished"
    IMPORT_FINISHED = "import.finished", "Dataset import finished"
    MODEL_PUBLISHED = "model.published", "Model published"
    MODEL_UNPUBLISHED = "model.unpublished", "Model unpublished"


# The events that end a run of a user's: the ones its owner may be mailed about.
RUN_ENDS = (
    Event.RUN_SUCCEEDED,
    Event.RUN_FAILED,
    Event.RUN_CANCELLED,
    Event.EVALUATION_FINISHED,
    Event.DETECTION_FINISHED,
)


class WebhookSubscription(models.Model):
    """A URL told about the chosen events on objects its owner may see, each body signed with its secret."""

    name = models.CharField(max_length=200, blank=True)
    url = models.URLField(max_length=2000, help_text="http(s) only; private and loopback addresses are refused.")
    secret = models.CharField(max_length=200, help_text="Signs every body (HMAC-SHA256); shown once, at creation.")
    events = ArrayField(models.CharField(max_length=40, choices=Event.choices))
    is_active = models.BooleanField(default=True)
    failing_since = models.DateTimeField(null=True, blank=True, help_text="First failure of the current streak.")
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["is_active"], name="webhook_active")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name or self.url}"


class WebhookSubscriptionUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE)


class WebhookSubscriptionGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE)


class WebhookDelivery(models.Model):
    """One event for one subscription: its body (kept as sent) and where its sending stands. Retried with
    exponential backoff until it is delivered or its retry window ends."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40, choices=Event.choices)
    event_id = models.UUIDField(help_text="The event's id: the same for every subscription and redelivery.")
    body = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(help_text="When the event happened (its transaction's time).")
    delivered_at = models.DateTimeField(null=True, blank=True)
    redelivery_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhook_due", condition=Q(status="pending")),
            models.Index(fields=["subscription", "-created_at"], name="webhook_delivery_log"),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.id}"


class DeliveryAttempt(models.Model):
    """One POST of a delivery: when, how long, what came back (the status and the first bytes, nothing more)."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-started_at"]


class NotificationSettings(models.Model):
    """What a user wants to be told by e-mail (nothing by default)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="notification_settings"
    )
    email_on_run_end = models.BooleanField(
        default=False, help_text="Mail me when one of my training runs, evaluations or detection runs ends."
    )

    class Meta:
        verbose_name_plural = "notification settings"

    def __str__(self) -> str:
        return f"notification settings of {self.user}"


class OutgoingMail(models.Model):
    """A mail to send, written in the transaction of what it tells and sent by a worker's dispatcher."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    to = models.EmailField()
    subject = models.CharField(max_length=300)
    body = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["next_attempt_at"], name="mail_due", condition=Q(status="pending"))]

    def __str__(self) -> str:
        return f"{self.subject} -> {self.to}"
