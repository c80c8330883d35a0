"""orjson for the routes that move the most JSON (the event batch: a thousand events in, a
thousand results out). Same documents as DRF's JSONParser and JSONRenderer, parsed and written
in C: strict JSON in (NaN and Infinity refused, as DRF does), anything orjson does not know
out through DRF's own encoder.

The parser is every route's (DEFAULT_PARSER_CLASSES): it also refuses, with a 400, what DRF's
parser lets through and the rest of a request cannot hold: a number beyond a double (1e400,
which Python reads as infinity and no integer field can take), a lone surrogate (which no
UTF-8 answer or column can hold, not even the error that quotes it), NUL, integers beyond
64 bits, and nesting deeper than MAX_DEPTH (orjson takes 1,024 levels; DRF's fields, json.dumps
and the PHI guard walk a document recursively and break Python's recursion limit well before).
The renderer is not the project default, because orjson writes datetimes as "+00:00"
where DRF writes "Z": use it on responses without datetimes."""

from __future__ import annotations

import json
from decimal import Decimal

import orjson
from django.core.serializers.json import DjangoJSONEncoder
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

_fallback = JSONEncoder().default


class FastJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read()
        # JSON can carry a NUL character only escaped; PostgreSQL text and jsonb refuse it.
        if b"\\u0000" in body:
            raise ParseError("JSON parse error - NUL characters (\\u0000) are not accepted.")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if len(body) > 2 * MAX_DEPTH and _too_deep(data):
            raise ParseError(f"JSON parse error - nested too deep (more than {MAX_DEPTH} levels).")
        # orjson reads an integer beyond 64 bits as a float, silently inexact; DRF's parser kept
        # it exact. Twenty digits in a row anywhere (strings too) earn a second, exact reading.
        if _has_long_digits(body) and _has_big_int(data, body):
            raise ParseError("JSON parse error - integers beyond 64 bits are not accepted; send them as strings.")
        return data


# orjson.dumps' own nesting limit, so that writing the document again tells (in C, a quarter of
# the time parsing took) whether it is deeper: a Python walk of a 1,000-event batch took longer
# than parsing it.
MAX_DEPTH = 254


def _too_deep(data) -> bool:
    """Whether the parsed document nests deeper than MAX_DEPTH. A document orjson parsed holds
    nothing orjson cannot write but depth."""
    try:
        orjson.dumps(data)
    except orjson.JSONEncodeError:
        return True
    return False


_ZEROED = bytes.maketrans(b"123456789", b"000000000")
_TWENTY = b"0" * 20


def _has_long_digits(body: bytes) -> bool:
    """Whether twenty digits stand in a row: every digit made a 0, then one substring search
    (a regular expression, \\d{20,}, took 2 ms over a 170 KB batch; this takes 0.1)."""
    return _TWENTY in body.translate(_ZEROED)


def _has_big_int(data, body: bytes) -> bool:
    """Whether the document holds an integer beyond 64 bits. orjson read those as floats, so
    there is something to look for only where orjson saw a float: json then reads the body
    again, exactly. Both are walked with a stack, not recursion (orjson takes nesting 1,024
    deep, past Python's recursion limit for a recursive walk)."""
    if not _has_float(data):
        return False
    try:
        exact = json.loads(body)
    except RecursionError:
        raise ParseError("JSON parse error - nested too deep.") from None
    return any(isinstance(leaf, int) and not -(2**63) <= leaf < 2**64 for leaf in json_leaves(exact))


def _has_float(data) -> bool:
    return any(isinstance(leaf, float) for leaf in json_leaves(data))


def json_leaves(value):
    """Every value in a document that is not an object or a list, walked with a stack."""
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        else:
            yield value


class FastJSONRenderer(JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return orjson.dumps(data, default=_fallback)


def dumps(value) -> str:
    """JSON text for PostgreSQL (a jsonb parameter). Decimals are written as strings, exactly
    (as DjangoJSONEncoder does); other non-JSON values as DRF writes them."""
    return orjson.dumps(value, default=_exact).decode()


def _exact(value):
    if isinstance(value, Decimal):
        return str(value)
    return _fallback(value)


django_default = DjangoJSONEncoder().default  # dates, times, decimals and UUIDs as Django writes them


def django_dumps(value) -> str:
    """The JSON text json.dumps(value, cls=DjangoJSONEncoder) writes, as PostgreSQL reads it,
    written in C: datetimes, dates, times and decimals go through Django's encoder (datetimes to
    the millisecond, UTC as "Z"), UUIDs as their text, keys that are not strings as json.dumps
    writes them. Differences PostgreSQL does not see: other characters than ASCII are written
    as UTF-8 rather than escaped, and floats in their shortest form ("1e-5", not "1e-05"). NaN
    and infinities are written as null (json.dumps wrote NaN, which PostgreSQL refused); what
    orjson cannot write at all (integers beyond 64 bits, tuple subclasses) goes through
    json.dumps."""
    options = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
    try:
        return orjson.dumps(value, option=options, default=django_default).decode()
    except orjson.JSONEncodeError:  # what orjson does not write (integers beyond 64 bits): as before
        return json.dumps(value, cls=DjangoJSONEncoder)


def fingerprint_bytes(value) -> bytes:
    """Canonical JSON (sorted keys) of a parsed document, for hashing."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
