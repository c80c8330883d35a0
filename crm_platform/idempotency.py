"""Idempotency-Key for effectful POSTs (CONTRACTS.md; IETF httpapi draft, Stripe practice).

    class ThingApi(APIView):
        @idempotent()                 # honoured when the client sends a key
        def post(self, request): ...

        @idempotent(required=True)    # a missing key is a 400

Keys belong to the client (API key, or staff user). The first request with a key claims it
in a committed row (so a concurrent duplicate sees it at once and gets 409), runs, and
stores its response in the same transaction as its effect. The same key and body later
replays that response with `Idempotent-Replayed: true`; the same key with another body is a
422. A request refused by an exception (bad input, permission) releases the key, so a
corrected retry may use it. Records are kept IDEMPOTENCY_TTL_DAYS, then purged by the retention
job (compliance.retention).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from crm_platform.api.errors import error_body
from crm_platform.models import ApiKey, IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


def idempotent(*, required: bool = False):
    def decorator(method):
        @functools.wraps(method)
        def wrapper(view, request, *args, **kwargs):
            key = request.headers.get(HEADER)
            if key is None:
                if required:
                    return _error(400, "idempotency_key_missing", f"This route needs an {HEADER} header.")
                return method(view, request, *args, **kwargs)
            if not _VALID_KEY.match(key):
                return _error(400, "idempotency_key_invalid", f"{HEADER} is 1 to 255 printable characters.")
            fingerprint = request_fingerprint(request)
            record, outcome = idempotency_claim(owner=owner_of(request), key=key, fingerprint=fingerprint)
            if outcome == "replay":
                return Response(record.response_body, status=record.response_status, headers={REPLAYED: "true"})
            if outcome == "mismatch":
                return _error(422, "idempotency_key_reused", f"This {HEADER} was used with another request body.")
            if outcome == "in_flight":
                return _error(409, "idempotency_key_in_flight", f"A request with this {HEADER} is still running.")
            try:
                with transaction.atomic():
                    response = method(view, request, *args, **kwargs)
                    if response.status_code >= 500:
                        raise _Unstored(response)
                    idempotency_complete(record=record, response=response)
            except _Unstored as unstored:
                idempotency_release(record=record)
                return unstored.response
            except BaseException:
                idempotency_release(record=record)
                raise
            return response

        return wrapper

    return decorator


class _Unstored(Exception):
    def __init__(self, response):
        self.response = response


def _error(status_code: int, code: str, message: str) -> Response:
    return Response(error_body(code, message), status=status_code)


def owner_of(request) -> str:
    if isinstance(request.auth, ApiKey):
        return f"key:{request.auth.pk}"
    return f"user:{request.user.pk}"


def request_fingerprint(request) -> str:
    digest = hashlib.sha256()
    digest.update(f"{request.method} {request.path}\n".encode())
    digest.update(request.body)
    return digest.hexdigest()


def idempotency_claim(*, owner: str, key: str, fingerprint: str) -> tuple[IdempotencyRecord, str]:
    """Claim `key` for this request, in a committed row. Returns (record, outcome) where outcome
    is "claimed", "replay", "mismatch" or "in_flight". A claim left in flight longer than
    IDEMPOTENCY_IN_FLIGHT_SECONDS (its process died) is taken over."""
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(owner=owner, key=key, request_hash=fingerprint), "claimed"
    except IntegrityError:
        pass
    record = IdempotencyRecord.objects.get(owner=owner, key=key)
    if record.request_hash != fingerprint:
        return record, "mismatch"
    if record.status == IdempotencyRecord.Status.COMPLETED:
        return record, "replay"
    abandoned = timezone.now() - dt.timedelta(seconds=settings.IDEMPOTENCY_IN_FLIGHT_SECONDS)
    taken = IdempotencyRecord.objects.filter(
        pk=record.pk, status=IdempotencyRecord.Status.IN_FLIGHT, created_at__lt=abandoned
    ).update(created_at=timezone.now())
    return record, "claimed" if taken else "in_flight"


def idempotency_complete(*, record: IdempotencyRecord, response: Response) -> None:
    """Store the response to replay; call inside the transaction that holds the effect."""
    body = json.loads(JSONRenderer().render(response.data)) if response.data is not None else None
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        status=IdempotencyRecord.Status.COMPLETED,
        response_status=response.status_code,
        response_body=body,
        completed_at=timezone.now(),
    )


def idempotency_release(*, record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, status=IdempotencyRecord.Status.IN_FLIGHT).delete()


# ----------------------------------------------------------------------------- many keys at once


def valid_key(key: str) -> bool:
    """1 to 255 printable ASCII characters, no spaces."""
    return bool(_VALID_KEY.match(key))


@dataclass(frozen=True)
class Found:
    """A key idempotency_lookup_many found: outcome "replay" (with the stored response),
    "mismatch" (another body) or "in_flight" (a request still running under it)."""

    outcome: str
    response_status: int | None = None
    response_body: Any = None


class IdempotencyRace(Exception):
    """idempotency_store_many found a key stored meanwhile by a concurrent request: roll the
    transaction back and run again (the key then replays)."""


def idempotency_lookup_many(*, owner: str, keys: list[tuple[str, str]]) -> dict[str, Found]:
    """Set-based paths (the event batch, single events): what is stored for these (key,
    fingerprint) pairs, in one query. Keys not in the answer are free: run the request, then
    store its response with idempotency_store_many in the same transaction. Nothing is written
    first, so a refused request leaves no claim to release; a request racing another with the
    same key finds out when it stores, and runs again to replay the winner's response. An
    in-flight key (a `@idempotent` request) abandoned longer than IDEMPOTENCY_IN_FLIGHT_SECONDS
    counts as free."""
    if not keys:
        return {}
    fingerprints = dict(keys)
    abandoned = timezone.now() - dt.timedelta(seconds=settings.IDEMPOTENCY_IN_FLIGHT_SECONDS)
    found = {}
    # The keys travel as one JSON array (a thousand IN parameters cost more in Python than the
    # query), joined so that each is one probe of the (owner, key) index.
    records = IdempotencyRecord.objects.raw(
        f"SELECT r.* FROM jsonb_array_elements_text(%s::jsonb) AS k(key) "  # noqa: S608
        f"JOIN {IdempotencyRecord._meta.db_table} AS r ON r.owner = %s AND r.key = k.key",
        [json.dumps(list(fingerprints)), owner],
    )
    for record in records:
        if record.request_hash != fingerprints[record.key]:
            found[record.key] = Found("mismatch")
        elif record.status == IdempotencyRecord.Status.COMPLETED:
            found[record.key] = Found("replay", record.response_status, record.response_body)
        elif record.created_at >= abandoned:
            found[record.key] = Found("in_flight")
    return found


def idempotency_store_many(*, owner: str, responses: list[tuple[str, str, int, Any]]) -> None:
    """Store (key, fingerprint, status code, JSON body) responses to replay, completed, in one
    INSERT; call in the transaction that holds the effects. Raises IdempotencyRace when another
    request stored one of the keys since idempotency_lookup_many (its INSERT waits for that
    transaction, so the answer is certain)."""
    if not responses:
        return
    now = timezone.now()
    abandoned = now - dt.timedelta(seconds=settings.IDEMPOTENCY_IN_FLIGHT_SECONDS)
    table = IdempotencyRecord._meta.db_table
    rows = sorted(responses, key=lambda r: r[0])  # one order, so overlapping stores wait, never deadlock
    document = [{"k": key, "h": fingerprint, "c": code, "b": body} for key, fingerprint, code, body in rows]
    with connection.cursor() as cursor:
        # The rows travel as one JSON document: psycopg would quote a thousand JSON strings in Python.
        cursor.execute(
            f"INSERT INTO {table} AS r (owner, key, request_hash, status, response_status, response_body, "  # noqa: S608
            "created_at, completed_at) "
            "SELECT %s, u.k, u.h, %s, u.c, u.b, %s, %s "
            "FROM jsonb_to_recordset(%s::jsonb) AS u(k text, h text, c int, b jsonb) "
            # An abandoned in-flight claim of the same request is taken over; anything else stays.
            "ON CONFLICT (owner, key) DO UPDATE SET status = EXCLUDED.status, "
            "response_status = EXCLUDED.response_status, response_body = EXCLUDED.response_body, "
            "created_at = EXCLUDED.created_at, completed_at = EXCLUDED.completed_at "
            "WHERE r.status = %s AND r.request_hash = EXCLUDED.request_hash AND r.created_at < %s "
            "RETURNING 1",
            [
                owner,
                IdempotencyRecord.Status.COMPLETED,
                now,
                now,
                json.dumps(document, cls=DjangoJSONEncoder),
                IdempotencyRecord.Status.IN_FLIGHT,
                abandoned,
            ],
        )
        if len(cursor.fetchall()) != len(rows):
            raise IdempotencyRace
