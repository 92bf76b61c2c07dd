"""What a user may see of notifications: the webhook subscriptions they own (or all, with the global view
permission: Administrators), their deliveries and attempts with them."""

from __future__ import annotations

from django.db.models import QuerySet

from access.rules import visible

from .models import WebhookDelivery, WebhookSubscription


def subscriptions_visible_to(user) -> QuerySet[WebhookSubscription]:
    return visible(user, "notifications.view_webhooksubscription", WebhookSubscription.objects.all())


def deliveries_visible_to(user) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(subscription__in=subscriptions_visible_to(user))
