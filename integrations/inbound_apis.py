"""Inbound events over HTTP: /api/v1/events, /api/v1/events/batch and seed 002's
/api/crm/webhooks/app-event. Each answers 202 with the stored result; a replay with the same
Idempotency-Key (or, in a batch, the same event id) answers the same, and changes nothing."""

from __future__ import annotations

import hashlib
import json

from django.core.exceptions import ValidationError
from django.db import OperationalError, transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema
from psycopg.errors import DeadlockDetected
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from crm_platform.actor import Actor
from crm_platform.api.errors import error_body
from crm_platform.api.throttling import PrincipalRateThrottle, RedisRateThrottle
from crm_platform.errors import ConflictError
from crm_platform.idempotency import (
    HEADER,
    REPLAYED,
    IdempotencyRace,
    idempotency_lookup_many,
    idempotency_store_many,
    idempotent,
    owner_of,
    request_fingerprint,
    valid_key,
)
from integrations.inbound import EventInput, event_ingest, event_parse, events_ingest

BATCH_MAX = 1000
RETRIES = 3
EARLIER_OTHER_BODY = "This event id appears earlier in this batch with another body."

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


def _occurred_at(value):
    """The seed's payloads carry ISO datetimes, plain dates or unix seconds."""
    import datetime as dt

    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, tz=dt.UTC).isoformat()
    if isinstance(value, str) and len(value) == 10:
        try:
            return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), tzinfo=dt.UTC).isoformat()
        except ValueError:
            return value
    return value


class AppUserRateThrottle(RedisRateThrottle):
    """Per app user (seed 002: 100 requests a minute), rate `app_user`."""

    rate_name = "app_user"

    def identity(self, request):
        data = request.data if isinstance(request.data, dict) else {}
        user_ref = data.get("user") if isinstance(data.get("user"), dict) else {}
        user = data.get("userId") or user_ref.get("external_id") or user_ref.get("email")
        return f"{owner_of(request)}:{user}" if isinstance(user, str) and user else None


def _accepted(result: dict) -> dict:
    return {"status": "accepted", "result": result}


def _errors(exc: ValidationError | ConflictError) -> dict:
    if isinstance(exc, ConflictError):
        return exc.fields or {"non_field_errors": [exc.message]}
    return exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}


class EventApi(APIView):
    """One app event. Idempotency-Key is required. The event's effects and its stored response
    share one transaction (one commit). Keys are nearly always new, so the first attempt does
    not look the key up: storing the response finds a key already stored (a replay, another
    body, a request racing this one), and then the attempt rolls back and the next one looks
    the key up and answers as stored. A refused event looks its key up before answering, so a
    replay is answered as stored even when the event would be refused today."""

    required_scopes = {"POST": "events:write"}
    throttle_classes = [PrincipalRateThrottle, AppUserRateThrottle]

    @extend_schema(request=EventInput, responses={202: OpenApiResponse(description="Accepted")})
    def post(self, request):
        key = request.headers.get(HEADER)
        if key is None:
            return _error(400, "idempotency_key_missing", f"This route needs an {HEADER} header.")
        if not valid_key(key):
            return _error(400, "idempotency_key_invalid", f"{HEADER} is 1 to 255 printable characters.")
        event = event_parse(request.data)
        owner, actor, fingerprint = owner_of(request), Actor.from_request(request), request_fingerprint(request)

        attempts = iter(range(RETRIES))

        def attempt():
            optimistic = next(attempts) == 0
            if not optimistic:
                found = idempotency_lookup_many(owner=owner, keys=[(key, fingerprint)]).get(key)
                if found is not None:
                    return found, None
            [outcome] = events_ingest(events=[event], actor=actor)
            if outcome.status == "accepted":
                body = {**_accepted(outcome.result), "type": event.type}
                idempotency_store_many(owner=owner, responses=[(key, fingerprint, 202, body)])
            elif optimistic:
                found = idempotency_lookup_many(owner=owner, keys=[(key, fingerprint)]).get(key)
                if found is not None:
                    transaction.set_rollback(True)  # answered before: this attempt leaves nothing
                    return found, None
            return None, outcome

        found, outcome = _retrying(attempt)
        if found is not None and found.outcome == "replay":
            return Response(found.response_body, status=found.response_status, headers={REPLAYED: "true"})
        if found is not None and found.outcome == "mismatch":
            return _error(422, "idempotency_key_reused", f"This {HEADER} was used with another request body.")
        if found is not None:
            return _error(409, "idempotency_key_in_flight", f"A request with this {HEADER} is still running.")
        if outcome.status == "rejected":
            raise outcome.error  # after the commit: the failed SyncEvent stays, nothing else was written
        return Response({**_accepted(outcome.result), "type": event.type}, status=202)


class EventBatchApi(APIView):
    """Up to 1,000 events, each with its own `id` (its idempotency key). One result per event:
    accepted, replayed, or rejected with its errors; only a malformed batch is a 400.

    Set-based: every event is parsed first, all ids are looked up in one query, the new events
    go through events_ingest together, and their results are stored in one statement, all in
    one transaction."""

    required_scopes = {"POST": "events:write"}

    class BatchInput(serializers.Serializer):
        events = serializers.ListField(child=serializers.DictField(), min_length=1, max_length=BATCH_MAX)

    @extend_schema(request=BatchInput, responses={202: OpenApiResponse(description="One result per event")})
    def post(self, request):
        items = request.data.get("events") if isinstance(request.data, dict) else None
        if not (isinstance(items, list) and 0 < len(items) <= BATCH_MAX and all(isinstance(i, dict) for i in items)):
            self.BatchInput(data=request.data).is_valid(raise_exception=True)  # words the 400
        results = batch_ingest(items, actor=Actor.from_request(request), owner=owner_of(request))
        counts = {k: sum(r["status"] == k for r in results) for k in ("accepted", "replayed", "rejected")}
        return Response({"results": results, **counts}, status=202)


def batch_ingest(items: list[dict], *, actor: Actor, owner: str) -> list[dict]:
    """One result per item: {"id", "status": accepted|replayed|rejected, "result" | "errors"}."""
    results: list[dict | None] = [None] * len(items)
    leaders: dict[str, tuple[int, str]] = {}  # event id -> (first index, fingerprint)
    repeats: list[tuple[int, str, str]] = []
    parsed: dict[int, tuple[str, str, object]] = {}
    for index, item in enumerate(items):
        event_id = item.get("id")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 200:
            results[index] = _rejected(event_id, {"id": ["Each event needs an id (1-200 chars)."]})
            continue
        fingerprint = hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()
        if event_id in leaders:
            repeats.append((index, event_id, fingerprint))
            continue
        leaders[event_id] = (index, fingerprint)
        try:
            parsed[index] = (event_id, fingerprint, event_parse(item))
        except ValidationError as exc:
            results[index] = _rejected(event_id, _errors(exc))
    for index, result in _retrying(lambda: _batch_write(parsed, actor=actor, owner=owner)).items():
        results[index] = result
    for index, event_id, fingerprint in repeats:  # the same id again in this batch: the first one's answer
        first, first_fingerprint = leaders[event_id]
        if fingerprint != first_fingerprint:
            results[index] = _rejected(event_id, {"id": [EARLIER_OTHER_BODY]})
        elif results[first]["status"] == "rejected":
            results[index] = results[first]
        else:
            results[index] = {"id": event_id, "status": "replayed", "result": results[first]["result"]}
    return results


def _batch_write(parsed: dict[int, tuple[str, str, object]], *, actor: Actor, owner: str) -> dict[int, dict]:
    found = idempotency_lookup_many(owner=owner, keys=[(f"event:{i}", f) for i, f, _ in parsed.values()])
    settled: dict[int, dict] = {}
    todo: list[tuple[int, str, str, object]] = []
    for index, (event_id, fingerprint, event) in parsed.items():
        stored = found.get(f"event:{event_id}")
        if stored is None:
            todo.append((index, event_id, fingerprint, event))
        elif stored.outcome == "replay":
            settled[index] = {"id": event_id, "status": "replayed", "result": stored.response_body}
        else:
            message = "reused with another body" if stored.outcome == "mismatch" else "still being processed"
            settled[index] = _rejected(event_id, {"id": [f"This event id was {message}."]})
    outcomes = events_ingest(events=[event for *_, event in todo], actor=actor)
    done = []
    for (index, event_id, fingerprint, _), outcome in zip(todo, outcomes, strict=True):
        if outcome.status == "accepted":
            settled[index] = {"id": event_id, "status": "accepted", "result": outcome.result}
            done.append((f"event:{event_id}", fingerprint, 202, outcome.result))
        else:
            settled[index] = _rejected(event_id, _errors(outcome.error))
    idempotency_store_many(owner=owner, responses=done)
    return settled


def _retrying(work):
    """Run `work` in a transaction; run it again when a concurrent request stored one of its
    keys first (it then replays) or PostgreSQL broke a deadlock by rolling it back."""
    for attempt in range(RETRIES):
        try:
            with transaction.atomic():
                return work()
        except IdempotencyRace:
            if attempt == RETRIES - 1:
                raise ConflictError("The same events are being sent concurrently; try again.") from None
        except OperationalError as exc:
            if not isinstance(exc.__cause__, DeadlockDetected) or attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _error(status_code: int, code: str, message: str) -> Response:
    return Response(error_body(code, message), status=status_code)


def _rejected(event_id, errors: dict) -> dict:
    return {"id": event_id, "status": "rejected", "errors": errors}


class AppEventApi(APIView):
    """Seed 002: POST /api/crm/webhooks/app-event with its own body, exactly."""

    required_scopes = {"POST": "events:write"}
    throttle_classes = [PrincipalRateThrottle, AppUserRateThrottle]

    class AppEventInput(serializers.Serializer):
        entityType = serializers.CharField(max_length=50)
        operation = serializers.ChoiceField(choices=["create", "update", "delete"])
        userId = serializers.CharField(max_length=128)
        externalId = serializers.CharField(max_length=128, required=False, allow_blank=True)
        payload = serializers.DictField(required=False, default=dict)

    @extend_schema(request=AppEventInput, responses={202: OpenApiResponse(description="Accepted")})
    @idempotent(required=True)
    def post(self, request):
        data = self.AppEventInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        pair = (values["entityType"], values["operation"])
        if pair not in APP_EVENT_TYPES:
            raise ValidationError({"entityType": [f"No event for {pair[0]}/{pair[1]}."]})
        payload = dict(values["payload"])
        occurred_at = _occurred_at(next((payload[k] for k in _OCCURRED_AT_KEYS if payload.get(k)), None))
        properties = {**payload, "entity_type": pair[0], "operation": pair[1]}
        if values.get("externalId"):
            properties["external_id"] = values["externalId"]
        envelope = {
            "type": APP_EVENT_TYPES[pair],
            "user": {"external_id": values["userId"]},
            "properties": properties,
            **({"occurred_at": occurred_at} if occurred_at else {}),
        }
        result = event_ingest(event=event_parse(envelope), actor=Actor.from_request(request))
        return Response(
            {
                "status": "accepted",
                "idempotencyKey": request.headers["Idempotency-Key"],
                "result": {"status": "success", "data": result},
            },
            status=202,
        )
