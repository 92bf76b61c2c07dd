"""Notifications in the console: webhook subscriptions (made, changed, disabled through their services; the secret
shown once), the delivery log with each attempt's answer and redelivery by hand, your own e-mail setting, and the
mails the platform sent."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from access.rules import can
from core.admin import AccessControlledAdmin, ReadOnlyAdmin, service_refusal
from core.errors import ApplicationError

from .models import Event, NotificationSettings, OutgoingMail, WebhookDelivery, WebhookSubscription
from .selectors import subscriptions_visible_to
from .services import (
    notification_settings_update,
    webhook_delivery_redeliver,
    webhook_subscription_create,
    webhook_subscription_update,
)

RECENT = 20


class SubscriptionForm(forms.ModelForm):
    events = forms.MultipleChoiceField(choices=Event.choices, widget=forms.CheckboxSelectMultiple)
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput,
        help_text="16 to 200 characters. Left empty: a new subscription gets one made for it (shown once); a saved "
        "one keeps its own.",
    )
    url = forms.CharField(max_length=2000, help_text="http(s); it must resolve to a public address.")

    class Meta:
        model = WebhookSubscription
        fields = ["name", "url", "events", "secret", "is_active"]


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(AccessControlledAdmin, admin.ModelAdmin):
    form = SubscriptionForm
    list_display = ["id", "name", "url", "event_list", "is_active", "failing_since", "created_by", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "url"]
    readonly_fields = ["failing_since", "disabled_at", "disabled_reason", "created_by", "created_at", "recent"]
    actions = ["disable", "enable"]

    def get_fields(self, request, obj=None):
        fields = ["name", "url", "events", "secret"]
        return fields if obj is None else [*fields, "is_active", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else []

    def has_add_permission(self, request):
        return can(request.user, "notifications.add_webhooksubscription")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:
            return form_class

        class CreateCheckedForm(form_class):  # type: ignore[misc, valid-type]
            """A new subscription is asked of its service first (rolled back): its refusal shows on the form."""

            def clean(self):
                data = super().clean()
                if not self.errors:
                    refusal = service_refusal(lambda: WebhookSubscriptionAdmin.create(request, data))
                    if refusal is not None:
                        self.add_error(None, str(getattr(refusal, "message", refusal)))
                return data

        return CreateCheckedForm

    @staticmethod
    def create(request, data: dict) -> WebhookSubscription:
        return webhook_subscription_create(
            user=request.user,
            url=data["url"],
            events=data["events"],
            name=data.get("name", ""),
            secret=data.get("secret") or None,
        )

    @admin.display(description="events")
    def event_list(self, obj):
        return ", ".join(obj.events)

    @admin.display(description=f"last {RECENT} deliveries")
    def recent(self, obj):
        deliveries = obj.deliveries.order_by("-created_at")[:RECENT]
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:notifications_webhookdelivery_change", args=[d.pk]),
                    d.event,
                    d.status,
                    d.attempts,
                    d.last_status_code or d.last_error[:80] or "—",
                    d.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                )
                for d in deliveries
            ),
        )
        head = "<tr><th>event</th><th>status</th><th>attempts</th><th>last answer</th><th>time</th></tr>"
        return format_html("<table>{}{}</table>", mark_safe(head), rows) if deliveries else "none yet"

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        data = form.cleaned_data
        made = self.create(request, data)
        obj.pk = made.pk
        if not data.get("secret"):
            messages.warning(request, f"The secret of webhook #{made.pk}, shown this once: {made.secret}")

    def save_with_service(self, request, obj, data: dict):
        changes = {k: data[k] for k in ("name", "url", "events", "is_active") if k in data}
        if data.get("secret"):
            changes["secret"] = data["secret"]
        return webhook_subscription_update(subscription=obj, user=request.user, **changes)

    def _set_active(self, request, queryset, active: bool) -> None:
        done = 0
        for subscription in queryset:
            try:
                webhook_subscription_update(subscription=subscription, user=request.user, is_active=active)
                done += 1
            except (PermissionDenied, ApplicationError) as exc:
                self.message_user(request, f"#{subscription.pk}: {getattr(exc, 'message', exc)}", messages.ERROR)
        if done:
            self.message_user(request, f"{'Enabled' if active else 'Disabled'} {done} webhook(s).")

    @admin.action(description="Disable the selected webhooks")
    def disable(self, request, queryset):
        self._set_active(request, queryset, False)

    @admin.action(description="Enable the selected webhooks (their failure count starts afresh)")
    def enable(self, request, queryset):
        self._set_active(request, queryset, True)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin, AccessControlledAdmin, admin.ModelAdmin):
    list_display = ["id", "event", "subscription", "status", "attempts", "last_status_code", "created_at"]
    list_filter = ["status", "event"]
    list_select_related = ["subscription"]
    fields = [
        "id",
        "subscription",
        "event",
        "event_id",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "delivered_at",
        "redelivery_of",
        "body_json",
        "attempt_table",
    ]
    readonly_fields = fields
    actions = ["redeliver"]

    def visible_queryset(self, request, queryset):
        return queryset.filter(subscription__in=subscriptions_visible_to(request.user))

    @admin.display(description="body")
    def body_json(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.body, indent=2, sort_keys=True))

    @admin.display(description="attempts (newest first)")
    def attempt_table(self, obj):
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{} ms</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (
                    a.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                    a.duration_ms,
                    a.status_code or "—",
                    a.error,
                    a.response_excerpt,
                )
                for a in obj.attempt_log.order_by("-started_at")
            ),
        )
        head = "<tr><th>time</th><th>took</th><th>status</th><th>error</th><th>answer (excerpt)</th></tr>"
        return format_html("<table>{}{}</table>", mark_safe(head), rows)

    @admin.action(description="Redeliver the selected deliveries")
    def redeliver(self, request, queryset):
        done = 0
        for delivery in queryset.select_related("subscription"):
            try:
                webhook_delivery_redeliver(delivery=delivery, user=request.user)
                done += 1
            except (PermissionDenied, ApplicationError) as exc:
                self.message_user(request, f"{delivery.pk}: {getattr(exc, 'message', exc)}", messages.ERROR)
        if done:
            self.message_user(request, f"Redelivering {done} event(s) as new deliveries.")


class NotificationSettingsForm(forms.ModelForm):
    user = None  # set per request by the admin

    class Meta:
        model = NotificationSettings
        fields = ["email_on_run_end"]

    def clean(self):
        data = super().clean()
        if data.get("email_on_run_end") and self.user is not None and not self.user.email:
            self.add_error("email_on_run_end", "Your account has no e-mail address to send to.")
        return data


@admin.register(NotificationSettings)
class NotificationSettingsAdmin(admin.ModelAdmin):
    """Each user sees and edits only their own settings."""

    form = NotificationSettingsForm
    list_display = ["user", "email_on_run_end"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(user=request.user)

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request) and (obj is None or obj.user_id == request.user.pk)

    has_change_permission = has_view_permission

    def has_add_permission(self, request):
        return (
            self.has_module_permission(request) and not NotificationSettings.objects.filter(user=request.user).exists()
        )

    def has_delete_permission(self, request, obj=None):
        return False

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)
        return type("UserSettingsForm", (form_class,), {"user": request.user})

    def save_model(self, request, obj, form, change):
        obj.user = request.user
        saved = notification_settings_update(user=request.user, email_on_run_end=obj.email_on_run_end)
        obj.pk = saved.pk


@admin.register(OutgoingMail)
class OutgoingMailAdmin(ReadOnlyAdmin, AccessControlledAdmin, admin.ModelAdmin):
    list_display = ["id", "to", "subject", "status", "attempts", "created_at", "sent_at"]
    list_filter = ["status"]
    fields = ["to", "subject", "body", "status", "attempts", "error", "created_at", "sent_at"]
    readonly_fields = fields
