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

The inbound event routes keep their keys in the inbox instead (integrations/inbox.py): there the
event's one INSERT is also its key's record, so a request claims, answers and stores in one
statement, and a duplicate racing it waits for that statement and replays.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from crm_platform.api.errors import error_body
from crm_platform.api.permissions import has_scope
from crm_platform.api.scopes import PHI_READ
from crm_platform.models import ApiKey, IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


@dataclass(frozen=True)
class KeyUse:
    """How a view method honours Idempotency-Key, for the published schema (crm_platform.api.schema):
    whether a missing key is a 400, and whether a duplicate sent while the first still runs is a 409
    (the inbox routes make it wait and replay instead)."""

    required: bool
    in_flight_conflict: bool = True


def honours_key(*, required: bool, in_flight_conflict: bool):
    """Marks a view method that honours Idempotency-Key itself (the event routes: the inbox)."""

    def mark(method):
        method.idempotency_key = KeyUse(required=required, in_flight_conflict=in_flight_conflict)
        return method

    return mark


def key_use(method) -> KeyUse | None:
    return getattr(method, "idempotency_key", None)


def idempotent(*, required: bool = False, withheld: dict[str, Callable[[dict], Any]] | None = None):
    """`withheld`: top-level response fields never stored (a secret shown once), each with how
    to put it back into a replay from the stored body (read it again from its own encrypted
    column); a replay whose field cannot be found again leaves it out."""

    def decorator(method):
        @functools.wraps(method)
        def wrapper(view, request, *args, **kwargs):
            key = request.headers.get(HEADER)
            if refused := key_refusal(key, required=required):
                return refused
            if key is None:
                return method(view, request, *args, **kwargs)
            fingerprint = request_fingerprint(request, keyed=bool(withheld))
            record, outcome = idempotency_claim(owner=owner_of(request), key=key, fingerprint=fingerprint)
            if outcome == "replay":
                if record.phi_read and not has_scope(request, PHI_READ):
                    return _error(403, "idempotency_replay_withheld", PHI_WITHHELD)
                body = _restored(record.response_body, withheld)
                return Response(body, status=record.response_status, headers={REPLAYED: "true"})
            if outcome == "mismatch":
                return key_reused()
            if outcome == "in_flight":
                return _error(409, "idempotency_key_in_flight", f"A request with this {HEADER} is still running.")
            try:
                with transaction.atomic():
                    response = method(view, request, *args, **kwargs)
                    if response.status_code >= 500:
                        raise _Unstored(response)
                    idempotency_complete(
                        record=record,
                        response=response,
                        withheld=withheld or (),
                        phi_read=has_scope(request, PHI_READ),
                    )
            except _Unstored as unstored:
                idempotency_release(record=record)
                return unstored.response
            except BaseException:
                idempotency_release(record=record)
                raise
            return response

        wrapper.idempotency_key = KeyUse(required=required)
        return wrapper

    return decorator


def _restored(body: Any, withheld: dict[str, Callable[[dict], Any]] | None) -> Any:
    if not withheld or not isinstance(body, dict):
        return body
    body = dict(body)
    for name, recover in withheld.items():
        if (value := recover(body)) is not None:
            body[name] = value
    return body


class _Unstored(Exception):
    def __init__(self, response):
        self.response = response


def key_refusal(key: str | None, *, required: bool) -> Response | None:
    """The 400 for a missing (when the route requires one) or malformed Idempotency-Key, or
    None. For routes that keep their keys elsewhere too (the event routes: the inbox)."""
    if key is None:
        return _error(400, "idempotency_key_missing", f"This route needs an {HEADER} header.") if required else None
    if not _VALID_KEY.match(key):
        return _error(400, "idempotency_key_invalid", f"{HEADER} is 1 to 255 printable characters.")
    return None


PHI_WITHHELD = (
    f"The response stored under this {HEADER} holds medical fields, and this caller may no longer read them "
    "(scope phi:read). Send the request under a new key."
)


def key_reused() -> Response:
    """The 422 for a key sent before with another request body."""
    return _error(422, "idempotency_key_reused", f"This {HEADER} was used with another request body.")


def _error(status_code: int, code: str, message: str) -> Response:
    return Response(error_body(code, message), status=status_code)


def owner_of(request) -> str:
    if isinstance(request.auth, ApiKey):
        return request.auth.owner
    return f"user:{request.user.pk}"


def request_fingerprint(request, *, keyed: bool = False) -> str:
    """What identifies a request's body under its key. `keyed` (a body that may carry a secret
    of the caller's choosing: its withheld routes): an HMAC under FIELD_HMAC_KEY, so the stored
    hash cannot be used to try guesses of that secret offline."""
    digest = hmac.new(settings.FIELD_HMAC_KEY.encode(), digestmod=hashlib.sha256) if keyed else hashlib.sha256()
    digest.update(f"{request.method} {request.path}\n".encode())
    digest.update(request.body)
    return digest.hexdigest()


def idempotency_claim(*, owner: str, key: str, fingerprint: str) -> tuple[IdempotencyRecord, str]:
    """Claim `key` for this request, in a committed row. Returns (record, outcome) where outcome
    is "claimed", "replay", "mismatch" or "in_flight". A claim left in flight longer than
    IDEMPOTENCY_IN_FLIGHT_SECONDS (its process died) is taken over."""
    for _ in range(3):
        try:
            with transaction.atomic():
                return IdempotencyRecord.objects.create(owner=owner, key=key, request_hash=fingerprint), "claimed"
        except IntegrityError:
            pass
        # Gone since our INSERT met it: its request failed and released it, or retention
        # purged it. The key is free again: claim it once more.
        record = IdempotencyRecord.objects.filter(owner=owner, key=key).first()
        if record is not None:
            break
    else:
        return IdempotencyRecord(owner=owner, key=key, request_hash=fingerprint), "in_flight"
    if record.request_hash != fingerprint:
        return record, "mismatch"
    if record.status == IdempotencyRecord.Status.COMPLETED:
        return record, "replay"
    abandoned = timezone.now() - dt.timedelta(seconds=settings.IDEMPOTENCY_IN_FLIGHT_SECONDS)
    taken = IdempotencyRecord.objects.filter(
        pk=record.pk, status=IdempotencyRecord.Status.IN_FLIGHT, created_at__lt=abandoned
    ).update(created_at=timezone.now())
    return record, "claimed" if taken else "in_flight"


def idempotency_complete(
    *, record: IdempotencyRecord, response: Response, withheld: Iterable[str] = (), phi_read: bool = False
) -> None:
    """Store the response to replay (less its `withheld` fields), encrypted, with the subjects
    erasure finds it by; `phi_read`: whether the caller could read medical fields (a replay to
    one who no longer can is refused). Call inside the transaction that holds the effect."""
    body = json.loads(JSONRenderer().render(response.data)) if response.data is not None else None
    if isinstance(body, dict):
        for name in withheld:
            body.pop(name, None)
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        status=IdempotencyRecord.Status.COMPLETED,
        response_status=response.status_code,
        response_body=body,
        phi_read=phi_read,
        subjects=response_subjects(body),
        completed_at=timezone.now(),
    )


CONTACT_KEYS = ("contact", "contact_id")  # the keys under which a response names a contact by id


def response_subjects(body: Any) -> list[str]:
    """What GDPR erasure finds a stored response by: the keyed hash (compliance.crypto.hmac_digest)
    of each text value anywhere in it (an email, an app user id, a phone, as the response wrote
    them), and "contact:<id>" for each id under a CONTACT_KEYS key. The response itself is
    encrypted, so it cannot be searched."""
    from compliance.crypto import hmac_digest

    found: set[str] = set()
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for name, item in value.items():
                if name in CONTACT_KEYS and isinstance(item, int) and not isinstance(item, bool):
                    found.add(contact_subject(item))
                else:
                    stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and value:
            found.add(hmac_digest(value))
    return sorted(found)


def contact_subject(contact_id: int) -> str:
    return f"contact:{contact_id}"


def idempotency_release(*, record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, status=IdempotencyRecord.Status.IN_FLIGHT).delete()
