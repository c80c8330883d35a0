"""Inbound events over HTTP: /api/v1/events, /api/v1/events/batch and seed 002's
/api/crm/webhooks/app-event. Each answers 202 with the stored result; a replay with the same
Idempotency-Key (or, in a batch, the same event id) answers the same, and changes nothing."""

from __future__ import annotations

import hashlib
import json

from django.core.exceptions import ValidationError
from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from crm_platform.actor import Actor
from crm_platform.api.throttling import PrincipalRateThrottle, RedisRateThrottle
from crm_platform.errors import ConflictError
from crm_platform.idempotency import idempotency_claim, idempotency_release, idempotent, owner_of
from crm_platform.models import IdempotencyRecord
from integrations.inbound import EventInput, event_ingest, event_parse

BATCH_MAX = 1000

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
    """One app event. Idempotency-Key is required."""

    required_scopes = {"POST": "events:write"}
    throttle_classes = [PrincipalRateThrottle, AppUserRateThrottle]

    @extend_schema(request=EventInput, responses={202: OpenApiResponse(description="Accepted")})
    @idempotent(required=True)
    def post(self, request):
        event = event_parse(request.data)
        result = event_ingest(event=event, actor=Actor.from_request(request))
        return Response({**_accepted(result), "type": event.type}, status=202)


class EventBatchApi(APIView):
    """Up to 1,000 events, each with its own `id` (its idempotency key). One result per event:
    accepted, replayed, or rejected with its errors; only a malformed batch is a 400."""

    required_scopes = {"POST": "events:write"}

    class BatchInput(serializers.Serializer):
        events = serializers.ListField(child=serializers.DictField(), min_length=1, max_length=BATCH_MAX)

    @extend_schema(request=BatchInput, responses={202: OpenApiResponse(description="One result per event")})
    def post(self, request):
        batch = self.BatchInput(data=request.data)
        batch.is_valid(raise_exception=True)
        actor, owner = Actor.from_request(request), owner_of(request)
        results = [self._one(item, actor, owner) for item in batch.validated_data["events"]]
        counts = {k: sum(r["status"] == k for r in results) for k in ("accepted", "replayed", "rejected")}
        return Response({"results": results, **counts}, status=202)

    def _one(self, item: dict, actor: Actor, owner: str) -> dict:
        event_id = item.get("id")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 200:
            return {"id": event_id, "status": "rejected", "errors": {"id": ["Each event needs an id (1-200 chars)."]}}
        fingerprint = hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()
        record, outcome = idempotency_claim(owner=owner, key=f"event:{event_id}", fingerprint=fingerprint)
        if outcome == "replay":
            return {"id": event_id, "status": "replayed", "result": record.response_body}
        if outcome in ("mismatch", "in_flight"):
            message = "reused with another body" if outcome == "mismatch" else "still being processed"
            return {"id": event_id, "status": "rejected", "errors": {"id": [f"This event id was {message}."]}}
        try:
            with transaction.atomic():
                result = event_ingest(event=event_parse(item), actor=actor)
                IdempotencyRecord.objects.filter(pk=record.pk).update(
                    status=IdempotencyRecord.Status.COMPLETED, response_status=202, response_body=result
                )
        except (ValidationError, ConflictError) as exc:
            idempotency_release(record=record)
            return {"id": event_id, "status": "rejected", "errors": _errors(exc)}
        except BaseException:
            idempotency_release(record=record)
            raise
        return {"id": event_id, "status": "accepted", "result": result}


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
