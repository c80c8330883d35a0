"""Declared properties of an inbound event type: which names it knows, and what each must be.

    FOOD_LOGGED = Properties(food_name=text(200), calories=number(0, 20_000), date=date())

`Properties.validate(properties)` checks the names it declares that the event carries and
returns the properties as sent (other names are kept: an app sends more than the CRM reads);
a value of None or "" counts as not sent. Each problem is a ValidationError at
`properties.<name>`, as the serializer schemas (`Serialized`) word theirs.

Why not a DRF serializer for these too: the timeline types are the volume (a batch is a
thousand of them, and the applier parses each again), and a serializer costs ~0.3 ms an event
where these checks cost a few microseconds. Types whose handlers need converted values
(amounts as Decimal) keep their serializers, behind the same `validate`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Any, Protocol

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework import serializers

Check = Callable[[Any], str | None]  # the value -> the problem with it, or None


class Schema(Protocol):
    def validate(self, properties: dict[str, Any]) -> dict[str, Any]:
        """The properties to store (checked, maybe converted); ValidationError otherwise."""


class Properties:
    def __init__(self, **checks: Check):
        self.checks = checks

    def validate(self, properties: dict[str, Any]) -> dict[str, Any]:
        checks = self.checks
        errors = None
        for name, value in properties.items():
            check = checks.get(name)
            if check is not None and value is not None and value != "" and (problem := check(value)) is not None:
                errors = errors or {}
                errors[f"properties.{name}"] = [problem]
        if errors:
            raise ValidationError(errors)
        return properties


class Serialized:
    """A DRF serializer as a Schema: its validated values (converted) over the properties sent."""

    def __init__(self, serializer: type[serializers.Serializer]):
        self.serializer = serializer

    def validate(self, properties: dict[str, Any]) -> dict[str, Any]:
        checked = self.serializer(data=properties)
        if not checked.is_valid():
            raise ValidationError(flat_errors({"properties": checked.errors}))
        return {**properties, **checked.validated_data}


def flat_errors(errors, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested errors as {"a.b": [messages]}."""
    flat: dict[str, list[str]] = {}
    for key, value in errors.items() if isinstance(errors, dict) else [("non_field_errors", errors)]:
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flat_errors(value, path))
        else:
            flat[path] = [str(v) for v in (value if isinstance(value, list) else [value])]
    return flat


# ----------------------------------------------------------------------------- checks


def text(max_length: int) -> Check:
    message = f"A string of at most {max_length} characters."

    def check(value):
        return None if isinstance(value, str) and len(value) <= max_length else message

    return check


def number(low: float, high: float) -> Check:
    """A JSON number, or a string of one (apps send both), from `low` to `high`."""
    message = f"A number from {low:g} to {high:g}."

    def check(value):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return message
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return message
        return None if math.isfinite(value) and low <= value <= high else message

    return check


_WHOLE = re.compile(r"\s*-?[0-9]{1,18}\s*")  # ASCII digits only: str.isdigit() takes "²" too


def integer(low: int, high: int) -> Check:
    """A whole JSON number, or a string of one."""
    message = f"A whole number from {low} to {high}."

    def check(value):
        if isinstance(value, str):
            if not _WHOLE.fullmatch(value):
                return message
            value = int(value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return message
        return None if low <= value <= high else message

    return check


def choice(*values: str) -> Check:
    """One of `values`, in any case."""
    allowed = frozenset(value.lower() for value in values)
    message = f"One of: {', '.join(values)}."
    return lambda value: None if isinstance(value, str) and value.lower() in allowed else message


def identifier() -> Check:
    """An id in the sender's system: a string of up to 128 characters, or a whole number."""
    message = "An id: a string of at most 128 characters, or a whole number."

    def check(value):
        if isinstance(value, str):
            return None if 0 < len(value) <= 128 else message
        return None if isinstance(value, int) and not isinstance(value, bool) else message

    return check


def date() -> Check:
    """A day (2025-12-28), a moment (ISO 8601), unix seconds or, from 1e11 on, epoch
    milliseconds (JavaScript's Date.now()), each a number or its digits as a string
    (`epoch_text`): what seed 002's payloads carry, and what the app-event route reads as the
    event's time."""
    message = "A date (YYYY-MM-DD), an ISO 8601 date-time, unix seconds or epoch milliseconds."

    def check(value):
        if isinstance(value, str):
            number = epoch_text(value)
            if number is None:
                return None if _day_or_moment(value) else message
            value = number  # judged as the number it spells
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value >= EPOCH_MILLISECONDS_FROM:
                return None if epoch_moment(value) is not None else message
            return None if math.isfinite(value) and 0 <= value < 2**33 else message
        return message

    return check


def moment() -> Check:
    message = "An ISO 8601 date-time."

    def check(value):
        try:
            return None if isinstance(value, str) and parse_datetime(value) is not None else message
        except ValueError:  # well formed, no such day
            return message

    return check


def email() -> Check:
    message = "An email address."

    def check(value):
        if not isinstance(value, str) or len(value) > 254:
            return message
        try:
            validate_email(value)
        except ValidationError:
            return message
        return None

    return check


def mapping() -> Check:
    return lambda value: None if isinstance(value, dict) else "An object."


def structured() -> Check:
    """An object or a list (answers to a questionnaire come as either)."""
    return lambda value: None if isinstance(value, dict | list) else "An object or a list."


def listing(max_length: int) -> Check:
    message = f"A list of at most {max_length} items."
    return lambda value: None if isinstance(value, list) and len(value) <= max_length else message


# An epoch number from 1e11 on is milliseconds, below it seconds. Apps send either (JavaScript's
# Date.now() gives milliseconds, most other clocks seconds) and say not which; the magnitude
# tells: 1e11 seconds is the year 5138, 1e11 milliseconds March 1973, so neither reading of
# the other side is ever an app event's time.
EPOCH_MILLISECONDS_FROM = 10**11
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def epoch_moment(value: int | float) -> dt.datetime | None:
    """The moment (UTC) an epoch number names: milliseconds from EPOCH_MILLISECONDS_FROM on,
    else seconds. None unless it is finite, positive (nothing an app records happened at or
    before 1970; 0 is a clock never set) and before the year 10000."""
    if not math.isfinite(value) or value <= 0:
        return None
    unit = "milliseconds" if value >= EPOCH_MILLISECONDS_FROM else "seconds"
    try:
        return _EPOCH + dt.timedelta(**{unit: value})
    except OverflowError:
        return None


def epoch_text(value: str) -> int | None:
    """The epoch number a string of nine to thirteen ASCII digits spells, or None. Apps send
    their clocks as text too (JavaScript's String(Date.now()): "1732700000000"), and the string
    means what the number would (epoch_moment: seconds below 1e11, then milliseconds): unix
    seconds of 2001 to 2286 have nine or ten digits, epoch milliseconds of 1973 to 2286 twelve
    or thirteen (eleven are seconds past 2286, refused as the number is). Fewer digits are not
    an app's clock: a compact date such as "20261127" (ISO 8601) has eight."""
    if 9 <= len(value) <= 13 and value.isascii() and value.isdigit():
        return int(value)
    return None


def _day_or_moment(value: str) -> dt.date | dt.datetime | None:
    try:
        return parse_date(value) if len(value) == 10 else parse_datetime(value)
    except ValueError:
        return None
