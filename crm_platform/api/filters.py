"""Filters every API list shares (django-filter)."""

from __future__ import annotations

import datetime as dt

import django_filters
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, as the moment in UTC. Python reads offsets up to 23:59, PostgreSQL
    refuses any beyond 15:59 (a 500 when the value went on with its own offset); in UTC every
    moment Python can hold between the years 1 and 9999 is one PostgreSQL takes."""

    def to_python(self, value):
        moment = super().to_python(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(dt.UTC)
        except OverflowError:
            raise ValidationError("A moment between the years 1 and 9999 in UTC.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField
