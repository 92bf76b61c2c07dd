"""Webhook subscriptions (yours; all of them for Administrators), their deliveries with each attempt's answer,
redelivery by hand, and your e-mail setting."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import ActionPermission

from ..models import NotificationSettings
from ..selectors import deliveries_visible_to, subscriptions_visible_to
from ..services import (
    notification_settings_update,
    webhook_delivery_redeliver,
    webhook_subscription_create,
    webhook_subscription_delete,
    webhook_subscription_update,
)
from .serializers import (
    DeliveryDetailSerializer,
    DeliverySerializer,
    NotificationSettingsSerializer,
    SubscriptionCreatedSerializer,
    SubscriptionSerializer,
)


class SubscriptionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Webhook subscriptions: a URL told about events (runs ending, evaluations, detection runs, imports,
    publications) on objects its owner may see, each body signed with the subscription's secret
    (``X-Signature: sha256=HMAC(secret, "<X-Dumpsite-Timestamp>." + body)``; docs/operations.md shows how to check
    it)."""

    lookup_value_regex = "[0-9]+"
    permission_classes = [ActionPermission]
    action_permissions = {
        "list": None,
        "retrieve": "notifications.view_webhooksubscription",
        "create": "notifications.add_webhooksubscription",
        "partial_update": "notifications.change_webhooksubscription",
        "destroy": "notifications.delete_webhooksubscription",
        "deliveries": "notifications.view_webhooksubscription",
    }
    serializer_class = SubscriptionSerializer
    filterset_fields = ["is_active"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return subscriptions_visible_to(self.request.user).order_by("-id")

    @extend_schema(request=SubscriptionSerializer, responses={201: SubscriptionCreatedSerializer})
    def create(self, request, *args, **kwargs):
        """Subscribe a URL to events; the answer holds the secret, this once."""
        payload = SubscriptionSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        subscription = webhook_subscription_create(
            user=request.user,
            url=data["url"],
            events=data["events"],
            name=data.get("name", ""),
            secret=data.get("secret"),
        )
        return Response(SubscriptionCreatedSerializer(subscription).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=SubscriptionSerializer, responses={200: SubscriptionSerializer})
    def partial_update(self, request, *args, **kwargs):
        """Change its name, URL, events or secret; disable it, or enable it again."""
        subscription = self.get_object()
        payload = SubscriptionSerializer(subscription, data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        subscription = webhook_subscription_update(
            subscription=subscription, user=request.user, **payload.validated_data
        )
        return Response(SubscriptionSerializer(subscription).data)

    def perform_destroy(self, instance):
        webhook_subscription_delete(subscription=instance, user=self.request.user)

    @extend_schema(responses={200: DeliverySerializer(many=True)})
    @action(detail=True, methods=["get"], filter_backends=[])
    def deliveries(self, request, pk=None):
        """The subscription's delivery log, newest first."""
        subscription = self.get_object()
        page = self.paginate_queryset(subscription.deliveries.order_by("-created_at"))
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)


class DeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Deliveries of the subscriptions you may see: the body sent, each attempt's status code, time and the first
    bytes of the answer; ``redeliver`` sends one again."""

    lookup_value_regex = "[0-9a-f-]{36}"
    permission_classes = [ActionPermission]
    action_permissions = {
        "list": None,
        "retrieve": "notifications.view_webhooksubscription",
        "redeliver": "notifications.change_webhooksubscription",
    }
    filterset_fields = ["subscription", "event", "status"]

    def permission_object(self, delivery):
        return delivery.subscription

    def get_queryset(self):
        deliveries = deliveries_visible_to(self.request.user).select_related("subscription").order_by("-created_at")
        return deliveries.prefetch_related("attempt_log") if self.action == "retrieve" else deliveries

    def get_serializer_class(self):
        return DeliveryDetailSerializer if self.action == "retrieve" else DeliverySerializer

    @extend_schema(request=None, responses={201: DeliverySerializer})
    @action(detail=True, methods=["post"], filter_backends=[])
    def redeliver(self, request, pk=None):
        """Send this delivery's event again, as a new delivery (same ``event_id``)."""
        again = webhook_delivery_redeliver(delivery=self.get_object(), user=request.user)
        return Response(DeliverySerializer(again).data, status=status.HTTP_201_CREATED)


class NotificationSettingsView(APIView):
    """Your own notification settings: whether you are mailed when one of your runs ends."""

    permission_classes = [IsAuthenticated]

    def _body(self, user) -> dict:
        found = NotificationSettings.objects.filter(user=user).first()
        return {"email_on_run_end": bool(found and found.email_on_run_end), "email": user.email}

    @extend_schema(responses={200: NotificationSettingsSerializer})
    def get(self, request):
        return Response(self._body(request.user))

    @extend_schema(request=NotificationSettingsSerializer, responses={200: NotificationSettingsSerializer})
    def patch(self, request):
        payload = NotificationSettingsSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        notification_settings_update(user=request.user, email_on_run_end=payload.validated_data["email_on_run_end"])
        return Response(self._body(request.user))
