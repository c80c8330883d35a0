"""Inbound events over HTTP: /api/v1/events, /api/v1/events/batch and seed 002's
/api/crm/webhooks/app-event. Each checks the event and queues it in the inbox
(integrations/inbox.py: one INSERT, which is also the Idempotency-Key record), answers 202
"queued", and the inbox applier applies it moments later; GET /api/v1/events/{id} tells how it
ended. A replay with the same Idempotency-Key (or, in a batch, the same event id) answers as
the first time and queues nothing."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import logging
import math
import time
from collections import Counter

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import OperationalError
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from psycopg.errors import DeadlockDetected
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.generics import get_object_or_404
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance.crypto import hmac_digest
from crm_platform.actor import Actor
from crm_platform.api.fastjson import FastJSONParser, FastJSONRenderer, fingerprint_bytes
from crm_platform.api.permissions import has_scope
from crm_platform.api.schema import error_response
from crm_platform.api.scopes import EVENT_SOURCES
from crm_platform.api.throttling import PrincipalRateThrottle, sliding_window_hits_members, sliding_window_refund
from crm_platform.idempotency import (
    HEADER,
    REPLAYED,
    honours_key,
    key_refusal,
    key_reused,
    owner_of,
    request_fingerprint,
)
from crm_platform.rates import parse_rate
from integrations.inbound import (
    APP_SOURCE,
    OTHER_SOURCE_REFUSED,
    Event,
    EventInput,
    event_parse,
    event_refusals_record,
    outcome_errors,
)
from integrations.inbox import (
    Accepted,
    Entry,
    inbox_accept,
    inbox_accept_one,
    inbox_find,
    inbox_find_many,
    inbox_refusals,
)
from integrations.models import InboundEvent
from integrations.properties import epoch_moment, epoch_text

logger = logging.getLogger(__name__)

BATCH_MAX = 1000
RETRIES = 3
EARLIER_OTHER_BODY = "This event id appears earlier in this batch with another body."
REUSED = "This event id was reused with another body."
APP_USER_LIMITED = "Too many events for this app user; send it again in {seconds} s."
# The API's word for each inbox state.
STATES = {
    InboundEvent.Status.PENDING: "queued",
    InboundEvent.Status.APPLIED: "applied",
    InboundEvent.Status.FAILED: "failed",
}

# Seed 002: (entityType, operation) -> our event type. Anything else is a 400 naming the pair.
APP_EVENT_TYPES: dict[tuple[str, str], str] = {
    ("user", "create"): "account_created",
    ("profile", "create"): "profile_updated",
    ("profile", "update"): "profile_updated",
    ("food_log", "create"): "food_logged",
    ("food_log", "update"): "food_logged",
    ("goal", "create"): "goal_progress",
    ("goal", "update"): "goal_progress",
    ("activity", "create"): "custom",
    ("order", "create"): "order_placed",
    ("subscription", "create"): "subscription_started",
    ("subscription", "delete"): "subscription_cancelled",
    ("consultation", "create"): "consultation_submitted",
    ("ticket", "create"): "support_ticket_created",
}
_OCCURRED_AT_KEYS = ("occurredAt", "timestamp", "date")
# The property naming the app's object, for types that have one: seed 002's `externalId` fills
# it when the payload does not (order/create with externalId "ord_1" is order ord_1).
_OBJECT_ID_PROPERTIES = {
    "order_placed": "order_id",
    "subscription_started": "subscription_id",
    "subscription_cancelled": "subscription_id",
    "consultation_submitted": "consultation_id",
    "goal_progress": "goal_id",
    "support_ticket_created": "ticket_id",
}
IDENTITY_CONFLICT = error_response("The event's email and app user id name two different people.")


TIME_REFUSED = (
    "A moment: an ISO 8601 date-time or date, unix seconds or epoch milliseconds (from 1e11 on), "
    "as a number or its digits, after 1970 and before the year 10000."
)


def _occurred_at(payload: dict) -> tuple[str | None, str | None]:
    """(the payload key the event's time comes from, the value for the envelope's
    `occurred_at`), or (None, None) when the payload gives none.

    The first of `occurredAt`, `timestamp`, `date` present and neither null nor "" counts. The
    seed's payloads carry ISO datetimes, plain dates, unix seconds and, from JavaScript apps,
    epoch milliseconds (Date.now()): a number from 1e11 on is milliseconds, below it seconds
    (properties.epoch_moment). A string of nine to thirteen digits is read as the number it
    spells (properties.epoch_text: "1703808000", "1732700000000"); other digit strings, such as
    a compact date "20261127", are left to event_parse, which reads that one as ISO 8601.
    ValidationError naming `payload.<key>` for a boolean or a number that names no moment (not
    finite, not positive, past the year 9999); event_parse judges the rest and its
    `occurred_at` errors are renamed after the key too (`_time_errors_named`)."""
    key = next((k for k in _OCCURRED_AT_KEYS if payload.get(k) not in (None, "")), None)
    if key is None:
        return None, None
    value = payload[key]
    if isinstance(value, str) and (number := epoch_text(value)) is not None:
        value = number
    if isinstance(value, bool):
        raise ValidationError({f"payload.{key}": [TIME_REFUSED]})
    if isinstance(value, int | float):
        moment = epoch_moment(value)
        if moment is None:
            raise ValidationError({f"payload.{key}": [TIME_REFUSED]})
        return key, moment.isoformat()
    if isinstance(value, str) and len(value) == 10:
        try:
            return key, dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), tzinfo=dt.UTC).isoformat()
        except ValueError:
            return key, value
    return key, value


@contextlib.contextmanager
def _time_errors_named(key: str | None):
    """The envelope's `occurred_at` came from `payload.<key>`: its errors name that field, the
    one the sender wrote."""
    try:
        yield
    except ValidationError as error:
        if key is None or not hasattr(error, "error_dict") or "occurred_at" not in error.error_dict:
            raise
        fields = error.message_dict
        fields[f"payload.{key}"] = fields.pop("occurred_at")
        raise ValidationError(fields) from None


class EventRateThrottle(PrincipalRateThrottle):
    """The sender's limit (rate `api_key` or `user`) and, in the same Redis round trip, the app
    user's (seed 002: 100 requests a minute, rate `app_user`)."""

    def windows(self, request):
        windows = super().windows(request)
        rate = _app_user_rate()
        data = request.data if isinstance(request.data, dict) else {}
        user_ref = data.get("user") if isinstance(data.get("user"), dict) else {}
        user = _app_user(data.get("userId") or user_ref.get("external_id"), user_ref.get("email"))
        if rate and user:
            windows.append((_app_user_window(owner_of(request)), rate, user))
        return windows


class InboxKeysMixin:
    """The event routes keep their Idempotency-Keys in the inbox: a single event over its
    limits whose key was used before is answered as then (replay, or 422 for another body), not
    429, as on every route (crm_platform.api.throttling looks the key up here)."""

    @staticmethod
    def idempotency_key_used(owner: str, key: str) -> bool:
        return InboundEvent.objects.filter(owner=owner, key=key).exists()


def _app_user_rate() -> str | None:
    return settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].get("app_user")


def _app_user(external_id, email) -> str | None:
    """Whom an event's app-user window counts: the app's user id (a number as its text, as the
    serializers read it), else the email as contacts stores it; None when neither is usable."""
    if isinstance(external_id, int) and not isinstance(external_id, bool):
        external_id = str(external_id)
    if isinstance(external_id, str) and external_id.strip():
        return _window_member(f"x:{external_id.strip()}")
    if isinstance(email, str) and email.strip():
        return _window_member(f"e:{email.strip().lower()}")
    return None


def _event_app_user(event: Event) -> str:
    """_app_user of a parsed event, whose identifiers are already as contacts stores them."""
    external_id = event.user.get("external_id")
    return _window_member("x:" + external_id if external_id else "e:" + event.user["email"])


@functools.lru_cache(maxsize=4096)  # a batch names each user several times (count, allowances, settle)
def _window_member(user: str) -> str:
    """The app user's member in the Redis window: a keyed hash, never the app user id or email
    itself (Redis is outside erasure's reach; an erased person's ids must not linger there)."""
    return hmac_digest(user)[:32]


def _app_user_window(owner: str) -> str:
    """The group of a sender's app-user windows (one member per app user)."""
    return f"app_user:{owner}"


class _AppUserLimits:
    """A batch's events in their app users' windows (the single-event routes' windows). Before
    anything is written, each user is admitted as many events as still fit, all in one Redis
    command (`short`: {user: (events admitted, seconds until one more fits)} for the users who
    did not get all of theirs; _within_allowances picks which). Once the batch is queued,
    `settle` takes back what cost nothing (events sent before, refused ones), so only queued
    events count and a resent batch does not use up its users' windows. Fails open, as every
    limit here, when Redis is away."""

    def __init__(self, owner: str, events: list[Event]):
        self.short: dict[str, tuple[int, int]] = {}
        self.counted: dict[str, int] = {}
        self.key, self.now, self.period = _app_user_window(owner), time.time(), 0  # period: set when counted
        rate = _app_user_rate()
        if not rate or not events:
            return
        per_user = Counter(map(_event_app_user, events))
        limit, self.period = parse_rate(rate)
        try:
            short = sliding_window_hits_members(self.key, per_user, limit, self.period, self.now)
        except Exception:
            logger.warning("rate limiter unavailable (Redis); batch allowed")
            return
        self.short = {user: (admitted, math.ceil(wait)) for user, (admitted, wait) in short.items()}
        self.counted = {user: short[user][0] if user in short else n for user, n in per_user.items()}

    def settle(self, queued: list[Event]) -> None:
        if not self.counted:
            return
        written = Counter(map(_event_app_user, queued))
        refunds = {user: n - written[user] for user, n in self.counted.items() if n > written[user]}
        if refunds:
            try:
                sliding_window_refund(self.key, refunds, self.period, self.now)
            except Exception:
                logger.warning("rate limiter unavailable (Redis); hits not taken back")


class QueuedEventOutput(serializers.Serializer):
    id = serializers.IntegerField(help_text="GET /api/v1/events/{id} tells how it ended.")
    type = serializers.CharField()
    status = serializers.ChoiceField(choices=["queued"])


class EventQueuedOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["accepted"])
    event = QueuedEventOutput()


class AppEventQueuedData(serializers.Serializer):
    event = serializers.IntegerField(help_text="GET /api/v1/events/{event} tells how it ended.")
    type = serializers.CharField()
    state = serializers.ChoiceField(choices=["queued"])


class AppEventQueuedResult(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success"])
    data = AppEventQueuedData()


class AppEventQueuedOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["accepted"])
    idempotencyKey = serializers.CharField()  # seed 002's name
    result = AppEventQueuedResult()


class EventStateOutput(serializers.Serializer):
    id = serializers.IntegerField()
    type = serializers.CharField()
    status = serializers.ChoiceField(choices=list(STATES.values()))
    received_at = serializers.DateTimeField()
    applied_at = serializers.DateTimeField(allow_null=True)
    result = serializers.JSONField(allow_null=True, help_text="Applied: what it made (null while queued or failed).")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.JSONField()),
        allow_null=True,
        help_text="Failed: field -> messages (null otherwise).",
    )


class EventBatchResultOutput(serializers.Serializer):
    id = serializers.JSONField(help_text="The event's id as sent (a string, unless the event sent something else).")
    status = serializers.ChoiceField(choices=["accepted", "replayed", "rejected"])
    event = serializers.IntegerField(required=False, help_text="Accepted or replayed: the queued event.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.JSONField()),
        required=False,
        help_text="Rejected: field -> messages.",
    )
    retry_after = serializers.IntegerField(required=False, help_text="Rejected for its app user's limit: seconds.")


class EventBatchOutput(serializers.Serializer):
    results = EventBatchResultOutput(many=True, help_text="One per event, in order.")
    accepted = serializers.IntegerField()
    replayed = serializers.IntegerField()
    rejected = serializers.IntegerField()


def _body(accepted: Accepted, key: str) -> dict:
    """The 202 body, the same for the first request and every replay (rebuilt from the row)."""
    if accepted.route == InboundEvent.Route.APP_EVENT:
        # Seed 002's words: the result "success" (the event is safely queued); how it ends is
        # the event's own state, GET /api/v1/events/{event}.
        data = {"event": accepted.id, "type": accepted.type, "state": "queued"}
        return {"status": "accepted", "idempotencyKey": key, "result": {"status": "success", "data": data}}
    return {"status": "accepted", "event": {"id": accepted.id, "type": accepted.type, "status": "queued"}}


def _queue_one(request, *, route: str, event, key: str) -> Response:
    """Check one event and queue it under the request's Idempotency-Key (a refusal raises)."""
    entry = Entry(key, request_fingerprint(request), event)
    actor = Actor.from_request(request)
    accepted = _retrying(lambda: inbox_accept_one(owner=owner_of(request), route=route, actor=actor, entry=entry))
    return _answer(accepted, key)


def _answer(accepted: Accepted, key: str) -> Response:
    if accepted.mismatch:
        return key_reused()
    headers = {REPLAYED: "true"} if accepted.replayed else None
    return Response(_body(accepted, key), status=202, headers=headers)


def _source_refusal(event: Event) -> ValidationError:
    return ValidationError({"source": [OTHER_SOURCE_REFUSED.format(source=event.source)]})


class EventApi(InboxKeysMixin, APIView):
    """One app event, queued. Idempotency-Key is required."""

    required_scopes = {"POST": "events:write"}
    throttle_classes = [EventRateThrottle]
    parser_classes = [FastJSONParser]
    renderer_classes = [JSONRenderer]  # a machine route: no browsable page to negotiate

    @extend_schema(
        request=EventInput,
        responses={
            202: OpenApiResponse(EventQueuedOutput, description="Queued"),
            403: OpenApiResponse(
                description='The caller lacks the scope events:write, or sends a source other than "app" without '
                "the scope events:sources"
            ),
            409: IDENTITY_CONFLICT,
        },
    )
    @honours_key(required=True, in_flight_conflict=False)
    def post(self, request):
        key = request.headers.get(HEADER)
        if refused := key_refusal(key, required=True):
            return refused
        event = event_parse(request.data)
        if event.source != APP_SOURCE and not has_scope(request, EVENT_SOURCES):
            # As every refusal at the door: an event answered before is answered as then.
            earlier = inbox_find(owner=owner_of(request), key=key, fingerprint=request_fingerprint(request))
            if earlier is not None:
                return _answer(earlier, key)
            event_refusals_record([(event, _source_refusal(event))])
            raise PermissionDenied(OTHER_SOURCE_REFUSED.format(source=event.source))
        return _queue_one(request, route=InboundEvent.Route.EVENT, event=event, key=key)


class EventDetailApi(APIView):
    """How a queued event ended: queued, applied (with what it made and the fields the conflict
    policy kept out as stale) or failed (with its errors). Only the sender's own events."""

    required_scopes = {"GET": "events:read"}

    @extend_schema(responses={200: OpenApiResponse(EventStateOutput, description="The event's state")})
    def get(self, request, pk: int):
        row = get_object_or_404(InboundEvent.objects.filter(owner=owner_of(request)), pk=pk)
        result = row.result or {}
        failed = row.status == InboundEvent.Status.FAILED
        return Response(
            {
                "id": row.pk,
                "type": row.type,
                "status": STATES[row.status],
                "received_at": row.received_at,
                "applied_at": row.applied_at,
                "result": None if failed else row.result,
                "errors": result.get("errors") if failed else None,
            }
        )


class EventBatchApi(APIView):
    """Up to 1,000 events, each with its own `id` (its idempotency key). One result per event:
    accepted (queued), replayed, or rejected with its errors; only a malformed batch is a 400.

    Set-based: every event is parsed first, their users are checked in one query, and the
    accepted ones are queued in one INSERT ... ON CONFLICT DO NOTHING; the ids it did not write
    (sent before) are then read in one query."""

    required_scopes = {"POST": "events:write"}
    parser_classes = [FastJSONParser]
    renderer_classes = [FastJSONRenderer]  # the results hold ids and field errors, no datetimes

    class BatchInput(serializers.Serializer):
        events = serializers.ListField(child=serializers.DictField(), min_length=1, max_length=BATCH_MAX)

    @extend_schema(
        request=BatchInput, responses={202: OpenApiResponse(EventBatchOutput, description="One result per event")}
    )
    def post(self, request):
        items = request.data.get("events") if isinstance(request.data, dict) else None
        if not (isinstance(items, list) and 0 < len(items) <= BATCH_MAX and all(isinstance(i, dict) for i in items)):
            self.BatchInput(data=request.data).is_valid(raise_exception=True)  # words the 400
        results = batch_queue(
            items,
            actor=Actor.from_request(request),
            owner=owner_of(request),
            other_sources=has_scope(request, EVENT_SOURCES),
        )
        counts = {k: sum(r["status"] == k for r in results) for k in ("accepted", "replayed", "rejected")}
        return Response({"results": results, **counts}, status=202)


def batch_queue(items: list[dict], *, actor: Actor, owner: str, other_sources: bool = False) -> list[dict]:
    """One result per item: {"id", "status": accepted|replayed, "event": inbox id} or
    {"id", "status": rejected, "errors"}. `other_sources`: whether the sender may send events as
    a source other than the app (scope events:sources)."""
    results: list[dict | None] = [None] * len(items)
    leaders: dict[str, tuple[int, str]] = {}  # event id -> (first index, fingerprint)
    repeats: list[tuple[int, str, str]] = []
    parsed: list[tuple[int, Entry]] = []
    not_theirs: list[tuple[int, Entry, ValidationError]] = []  # a source the sender may not name
    received_at = timezone.now()  # when an event without occurred_at happened
    for index, item in enumerate(items):
        event_id = item.get("id")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 200:
            results[index] = _rejected(event_id, {"id": ["Each event needs an id (1-200 chars)."]})
            continue
        fingerprint = hashlib.sha256(fingerprint_bytes(item)).hexdigest()
        if event_id in leaders:
            repeats.append((index, event_id, fingerprint))
            continue
        leaders[event_id] = (index, fingerprint)
        try:
            event = event_parse(item, received_at=received_at)
        except ValidationError as exc:
            results[index] = _rejected(event_id, outcome_errors(exc))
            continue
        entry = Entry(f"event:{event_id}", fingerprint, event)
        if event.source != APP_SOURCE and not other_sources:
            not_theirs.append((index, entry, _source_refusal(event)))
        else:
            parsed.append((index, entry))
    limits = _AppUserLimits(owner, [entry.event for _, entry in parsed])
    if limits.short:
        parsed = _within_allowances(parsed, limits.short, results, owner)
    refusals = inbox_refusals([entry.event for _, entry in parsed])
    refused = [(index, entry, refusals[n]) for n, (index, entry) in enumerate(parsed) if n in refusals] + not_theirs
    queued = [(index, entry) for n, (index, entry) in enumerate(parsed) if n not in refusals]
    # A refused event sent before under its id is answered as then (one query for them all).
    earlier = inbox_find_many(owner=owner, entries=[entry for _, entry, _ in refused])
    for index, entry, refusal in refused:
        results[index] = _batch_result(earlier[entry.key], entry) or _rejected(
            entry.key.removeprefix("event:"), outcome_errors(refusal)
        )
    event_refusals_record([(entry.event, refusal) for _, entry, refusal in refused if earlier[entry.key] is None])
    entries = [entry for _, entry in queued]
    accepted = _retrying(
        lambda: inbox_accept(owner=owner, route=InboundEvent.Route.BATCH, actor=actor, entries=entries)
    )
    for (index, entry), outcome in zip(queued, accepted, strict=True):
        results[index] = _batch_result(outcome, entry)
    limits.settle([e.event for e, a in zip(entries, accepted, strict=True) if not (a.replayed or a.mismatch)])
    for index, event_id, fingerprint in repeats:  # the same id again in this batch: the first one's answer
        first, first_fingerprint = leaders[event_id]
        if fingerprint != first_fingerprint:
            results[index] = _rejected(event_id, {"id": [EARLIER_OTHER_BODY]})
        elif results[first]["status"] == "rejected":
            results[index] = results[first]
        else:
            results[index] = {**results[first], "status": "replayed"}
    return results


def _within_allowances(
    parsed: list[tuple[int, Entry]], allowances: dict[str, tuple[int, int]], results: list, owner: str
) -> list[tuple[int, Entry]]:
    """The entries to go on with when some app users are over their limit: those users' events
    sent before are answered as then (a resent batch replays, whatever the limit; one query),
    and their new events take the admitted places in order; the rest are refused with when to
    send them again."""
    short = [(index, entry) for index, entry in parsed if _event_app_user(entry.event) in allowances]
    earlier = inbox_find_many(owner=owner, entries=[entry for _, entry in short])
    places = {user: admitted for user, (admitted, _) in allowances.items()}
    kept = []
    for index, entry in parsed:
        user = _event_app_user(entry.event)
        if user not in allowances:
            kept.append((index, entry))
        elif (answered := _batch_result(earlier[entry.key], entry)) is not None:
            results[index] = answered
        elif places[user] > 0:
            places[user] -= 1
            kept.append((index, entry))
        else:
            wait = allowances[user][1]
            error = {"user": [APP_USER_LIMITED.format(seconds=wait)]}
            results[index] = _rejected(entry.key.removeprefix("event:"), error) | {"retry_after": wait}
    return kept


def _batch_result(accepted: Accepted | None, entry: Entry) -> dict | None:
    if accepted is None:
        return None
    event_id = entry.key.removeprefix("event:")
    if accepted.mismatch:
        return _rejected(event_id, {"id": [REUSED]})
    return {"id": event_id, "status": "replayed" if accepted.replayed else "accepted", "event": accepted.id}


def _retrying(work):
    """Run `work` again when PostgreSQL broke a deadlock by rolling it back (two batches
    queueing some of the same ids in different orders)."""
    for attempt in range(RETRIES):
        try:
            return work()
        except OperationalError as exc:
            if not isinstance(exc.__cause__, DeadlockDetected) or attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _rejected(event_id, errors: dict) -> dict:
    return {"id": event_id, "status": "rejected", "errors": errors}


class AppEventApi(InboxKeysMixin, APIView):
    """Seed 002: POST /api/crm/webhooks/app-event with its own body, exactly."""

    required_scopes = {"POST": "events:write"}
    throttle_classes = [EventRateThrottle]
    parser_classes = [FastJSONParser]
    renderer_classes = [JSONRenderer]

    class AppEventInput(serializers.Serializer):
        entityType = serializers.CharField(max_length=50)
        operation = serializers.ChoiceField(choices=["create", "update", "delete"])
        userId = serializers.CharField(max_length=128)
        externalId = serializers.CharField(max_length=128, required=False, allow_blank=True)
        payload = serializers.DictField(required=False, default=dict)

    @extend_schema(
        request=AppEventInput,
        responses={202: OpenApiResponse(AppEventQueuedOutput, description="Queued"), 409: IDENTITY_CONFLICT},
    )
    @honours_key(required=True, in_flight_conflict=False)
    def post(self, request):
        key = request.headers.get(HEADER)
        if refused := key_refusal(key, required=True):
            return refused
        data = self.AppEventInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        pair = (values["entityType"], values["operation"])
        if pair not in APP_EVENT_TYPES:
            raise ValidationError({"entityType": [f"No event for {pair[0]}/{pair[1]}."]})
        payload = dict(values["payload"])
        time_key, occurred_at = _occurred_at(payload)
        properties = {**payload, "entity_type": pair[0], "operation": pair[1]}
        if values.get("externalId"):
            properties["external_id"] = values["externalId"]
            if (name := _OBJECT_ID_PROPERTIES.get(APP_EVENT_TYPES[pair])) and payload.get(name) in (None, ""):
                properties[name] = values["externalId"]
        user = {"external_id": values["userId"]}
        if pair == ("user", "create") and isinstance(payload.get("email"), str) and payload["email"]:
            user["email"] = payload["email"]  # the new user's address, checked as any event's
        envelope = {
            "type": APP_EVENT_TYPES[pair],
            "user": user,
            "properties": properties,
            **({"occurred_at": occurred_at} if occurred_at else {}),
        }
        with _time_errors_named(time_key):
            event = event_parse(envelope)
        return _queue_one(request, route=InboundEvent.Route.APP_EVENT, event=event, key=key)
