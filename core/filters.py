"""Filter pieces shared by the API's list endpoints."""

from __future__ import annotations

from datetime import UTC

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
                parsed = parsed.astimezone(UTC)
            except (OverflowError, ValueError) as exc:
                raise forms.ValidationError("Date-time out of range.", code="invalid") from exc
        return parsed


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class IdField(forms.IntegerField):
    """A whole-number id; anything else (or a number PostgreSQL's bigint cannot hold) is a 400, not a 500."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", 2**63 - 1)
        super().__init__(*args, **kwargs)


class IdFilter(django_filters.NumberFilter):
    field_class = IdField


class ApiFilterSet(FilterSet):
    """Foreign keys filter by plain id: django-filter's default (a choice among *all* rows) answers 400 for an id
    that does not exist and 200 for one the user may not see (an existence oracle), and lists every row's name
    in the browsable API's filter form. By id, any id is a valid filter that matches only what the user sees."""

    FILTER_DEFAULTS = {
        **FilterSet.FILTER_DEFAULTS,
        models.DateTimeField: {"filter_class": UtcIsoDateTimeFilter},
        models.ForeignKey: {"filter_class": IdFilter},
        models.OneToOneField: {"filter_class": IdFilter},
    }
