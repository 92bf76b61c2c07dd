"""The admin sees and does what the API allows: the same visibility filter, the same object checks, and every
edit saved through the domain's service (checked there, for the acting user), never by a bare ``save()``."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from access.rules import can, visible
from core.errors import ApplicationError
from core.formatting import duration

MAX_COMPARE_IDS = 20
HIDDEN = "(not visible to you)"


def related_link(pk: int | None, is_visible: bool, *, url_name: str, name: str = ""):
    """A link to a related object's admin page, or a neutral mark when the user may not see it: nothing of it
    (name, id) shows then."""
    if pk is None:
        return "—"
    if not is_visible:
        return HIDDEN
    label = f"#{pk} {name}" if name else f"#{pk}"
    return format_html('<a href="{}">{}</a>', reverse(url_name, args=[pk]), label)


def related_model_html(pk: int | None, name: str, is_visible: bool):
    return related_link(pk, is_visible, url_name="admin:models_registry_trainedmodel_change", name=name)


def fields_of(fieldsets) -> tuple[str, ...]:
    """Every field named in ``fieldsets``, in order: for admins whose pages show and edit nothing else."""
    return tuple(field for _, options in fieldsets for field in options["fields"])


def parse_ids(text: str | None, limit: int = MAX_COMPARE_IDS) -> list[int]:
    """Ids from a comma-separated query value. Only ASCII digits count: ``str.isdigit`` accepts '²' and '٣',
    which ``int()`` then rejects or reads as another number."""
    ids = []
    for part in (text or "").split(","):
        part = part.strip()
        if re.fullmatch(r"[0-9]{1,18}", part):
            ids.append(int(part))
    return list(dict.fromkeys(ids))[:limit]


class VisibleRelatedOnlyFilter(admin.RelatedOnlyFieldListFilter):
    """A related-object filter listing only the related objects that the listed rows use *and* the user may see
    (``<app>.view_<model>``): a published model trained on a private dataset must not name that dataset."""

    def field_choices(self, field, request, model_admin):
        related = field.remote_field.model
        meta = related._meta
        used = model_admin.get_queryset(request).distinct().values_list(f"{self.field_path}__pk", flat=True)
        seen = visible(request.user, f"{meta.app_label}.view_{meta.model_name}", related.objects.all())
        return field.get_choices(
            include_blank=False,
            ordering=self.field_admin_ordering(field, request, model_admin),
            limit_choices_to=Q(pk__in=used) & Q(pk__in=seen.values("pk")),
        )


def spec_field(spec: Any, default, help_text: str, *, blank_choice: bool = False) -> forms.Field:
    """An optional form field for one run parameter (an ``engine.params.ParamSpec``: its kind, help and choices):
    empty means its default (shown as the placeholder; for a choice,
    the first one unless ``blank_choice`` offers "default" first)."""
    if spec.kind is bool:
        return forms.BooleanField(required=False, help_text=f"{spec.help} Default: off.")
    if spec.kind is str:
        return forms.ChoiceField(
            choices=[*([("", f"default ({default})")] if blank_choice else []), *((c, c) for c in spec.choices or ())],
            required=False,
            help_text=help_text,
        )
    if spec.kind is int:
        return forms.IntegerField(
            required=False, help_text=help_text, widget=forms.NumberInput(attrs={"placeholder": default})
        )
    return forms.FloatField(
        required=False, help_text=help_text, widget=forms.NumberInput(attrs={"placeholder": default, "step": "any"})
    )


def priority_field() -> forms.ChoiceField:
    """A run's queue priority on a start form."""
    return forms.ChoiceField(
        choices=[("normal", "Normal"), ("high", "High")],
        initial="normal",
        required=False,
        help_text="High: starts before every normal run (needs the permission to prioritize runs).",
    )


def progress_bar(*, status: str, percent: float, eta_seconds: float | None, **data: object):
    """The console's live progress bar, with its percent and ETA. ``static/admin_console/progress.js`` polls it
    while it runs: through ``url`` (its progress endpoint), or a training run's own by ``run``."""
    attributes = format_html_join(" ", 'data-{}="{}"', data.items())
    eta = f"ETA {duration(eta_seconds)}" if status == "running" and eta_seconds is not None else ""
    return format_html(
        '<span class="run-progress" {} data-status="{}"><progress max="100" value="{}"></progress> '
        '<span class="pct">{}%</span> <span class="eta">{}</span></span>',
        attributes,
        status,
        percent,
        round(percent),
        eta,
    )


class _DryRun(Exception):
    pass


def service_refusal(call) -> Exception | None:
    """Run ``call`` in a transaction that is always rolled back; return the ApplicationError or PermissionDenied
    it raised, or None. Forms use it to show a service's refusal on the form before anything is saved."""
    try:
        with transaction.atomic():
            call()
            raise _DryRun
    except _DryRun:
        return None
    except (ApplicationError, PermissionDenied) as exc:
        return exc


class AccessControlledAdmin:
    """Mixin for ModelAdmin. ``view_perm`` decides which objects are listed; change / delete are checked on the
    object (global or object permission), like the API's ActionPermission. Admins whose change form edits
    anything implement ``save_with_service(request, obj, data)``; the form asks the same service first (in a
    rolled-back transaction) and shows its refusal on the form."""

    view_perm: str = ""
    model: type[models.Model]  # the ModelAdmin's

    def _perm(self, action: str) -> str:
        opts = self.model._meta
        return f"{opts.app_label}.{action}_{opts.model_name}"

    def visible_queryset(self, request, queryset):
        return visible(request.user, self.view_perm or self._perm("view"), queryset)

    def get_queryset(self, request):
        return self.visible_queryset(request, super().get_queryset(request))

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request, obj=None):
        if obj is None:
            return request.user.is_active and request.user.is_staff
        return self.visible_queryset(request, self.model.objects.filter(pk=obj.pk)).exists()

    def has_change_permission(self, request, obj=None):
        return can(request.user, self._perm("change"), obj)

    def has_delete_permission(self, request, obj=None):
        return can(request.user, self._perm("delete"), obj)

    def save_with_service(self, request, obj, data: dict):
        raise PermissionDenied("This page cannot change anything.")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)
        admin = self

        class ServiceCheckedForm(form_class):
            def clean(self):
                data = super().clean()
                if self.instance.pk and not self.errors:
                    original = admin.model.objects.get(pk=self.instance.pk)
                    refusal = service_refusal(lambda: admin.save_with_service(request, original, data))
                    if refusal is not None:
                        self._add_refusal(refusal)
                return data

            def _add_refusal(self, refusal):
                extra = getattr(refusal, "extra", {}) or {}
                placed = False
                for key, value in extra.items():
                    if key in self.fields:
                        self.add_error(key, f"{getattr(refusal, 'message', refusal)} ({value})")
                        placed = True
                if not placed:
                    self.add_error(None, str(getattr(refusal, "message", refusal)) or "Permission denied.")

        return form_class if obj is None else ServiceCheckedForm

    def save_model(self, request, obj, form, change):
        if not change:
            raise PermissionDenied("Objects are created through their services, not this form.")
        self.save_with_service(request, self.model.objects.get(pk=obj.pk), form.cleaned_data)

    def save_related(self, request, form, formsets, change):
        pass  # no inline or many-to-many edits here: the service saved what may change


class ReadOnlyAdmin:
    """Mixin for ModelAdmin: pages that show what the platform recorded (audit events, evaluations, predictions,
    workers). Nothing is added, changed or deleted through them; the services write these records."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
