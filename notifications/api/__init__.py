"""REST API of notifications: webhook subscriptions and their delivery log, and a user's e-mail setting."""

from .views import DeliveryViewSet, NotificationSettingsView, SubscriptionViewSet

__all__ = ["DeliveryViewSet", "NotificationSettingsView", "SubscriptionViewSet"]
