"""Filter pieces shared by the API's list endpoints."""

from __future__ import annotations

from datetime import timezone

import django_filters
from django import forms
from django.db import models
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import FilterSet


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, normalised to UTC. PostgreSQL refuses offsets past +-15:59 that Python accepts, so
    such values become a 400 here instead of a database error."""

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is not None and parsed.tzinfo is not None:
            try:
                parsed = parsed.astimezone(timezone.utc)
            except (OverflowError, ValueError) as exc:
                raise forms.ValidationError("Date-time out of range.", code="invalid") from exc
        return parsed


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class ApiFilterSet(FilterSet):
    FILTER_DEFAULTS = {**FilterSet.FILTER_DEFAULTS, models.DateTimeField: {"filter_class": UtcIsoDateTimeFilter}}
