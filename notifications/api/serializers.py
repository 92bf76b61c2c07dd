"""Serializers of notifications. A subscription's secret is written, and shown once: in the answer that made it."""

from __future__ import annotations

from rest_framework import serializers

from ..models import DeliveryAttempt, Event, WebhookDelivery, WebhookSubscription


class SubscriptionSerializer(serializers.ModelSerializer):
    events = serializers.ListField(child=serializers.ChoiceField(choices=Event.choices), allow_empty=False)
    secret = serializers.CharField(
        write_only=True, required=False, help_text="16 to 200 characters; left out, one is made (and shown once)."
    )
    url = serializers.CharField(max_length=2000)

    class Meta:
        model = WebhookSubscription
        fields = [
            "id",
            "name",
            "url",
            "events",
            "secret",
            "is_active",
            "failing_since",
            "disabled_at",
            "disabled_reason",
            "created_by",
            "created_at",
        ]
        read_only_fields = ["failing_since", "disabled_at", "disabled_reason", "created_by", "created_at"]


class SubscriptionCreatedSerializer(SubscriptionSerializer):
    """The answer to a create: the subscription with its secret, this once."""

    secret = serializers.CharField(read_only=True)


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ["started_at", "duration_ms", "status_code", "error", "response_excerpt"]


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "subscription",
            "event",
            "event_id",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "created_at",
            "delivered_at",
            "redelivery_of",
        ]


class DeliveryDetailSerializer(DeliverySerializer):
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta(DeliverySerializer.Meta):
        fields = [*DeliverySerializer.Meta.fields, "body", "attempt_log"]


class NotificationSettingsSerializer(serializers.Serializer):
    email_on_run_end = serializers.BooleanField(
        help_text="Mail me when one of my training runs, evaluations or detection runs ends."
    )
    email = serializers.EmailField(read_only=True, help_text="Where the mails go (your account's address).")
