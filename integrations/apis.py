"""integrations API: outbound webhook endpoints (/api/v1/webhook-endpoints) and seed 003's
webhook routes. Thin views: validate, call one service or selector, serialize.

An API key sees and manages the endpoints it registered; staff (session) see all of them."""

from __future__ import annotations

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from crm_platform.actor import Actor
from crm_platform.api.pagination import CursorPagination
from crm_platform.api.permissions import has_scope
from crm_platform.api.scopes import PHI_READ
from crm_platform.idempotency import idempotent
from crm_platform.models import ApiKey
from integrations import selectors, services
from integrations import serializers as io
from integrations.events import normalize_event_type
from integrations.models import WebhookDelivery, WebhookEndpoint


def _owner(request) -> ApiKey | None:
    return request.auth if isinstance(request.auth, ApiKey) else None


def _endpoints(request):
    return selectors.webhook_endpoint_list(owner=_owner(request))


def _valid(serializer_class, data, *, partial: bool = False) -> dict:
    serializer = serializer_class(data=data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


PHI_AUTHORITY = (
    "Deciding where medical fields go (may_receive_phi, phi_fields; the URL, event types or "
    "switching on of an endpoint that may receive them) needs the phi:read scope."
)
STAFF_DISABLED = "Staff disabled this endpoint; ask them to enable it."
API_DISABLED = "disabled through the API"


def _check_phi_authority(request, data: dict, endpoint: WebhookEndpoint | None = None) -> None:
    """Only a caller who may read medical fields (phi:read) may send them somewhere: turn them
    on, add to them, or move an endpoint that receives them. Anyone else with webhooks:write
    manages endpoints that receive none, and may turn them off (PermissionDenied: 403, nothing
    changed)."""
    if has_scope(request, PHI_READ):
        return
    was_on = endpoint is not None and endpoint.may_receive_phi
    had = set(endpoint.phi_fields) if endpoint is not None else set()
    on = data.get("may_receive_phi", was_on)
    widens = (on and not was_on) or not set(data.get("phi_fields", ())) <= had
    if endpoint is not None and on:
        # An endpoint receiving medical fields: moving it, subscribing it to more event types
        # (none listed: all) or switching it back on sends them further or again.
        types, had_types = data.get("event_types"), set(endpoint.event_types)
        named = {normalize_event_type(name) or name for name in types or ()}  # seed 003 names too
        widens = widens or (types is not None and had_types and (not types or not named <= had_types))
        widens = widens or data.get("url", endpoint.url) != endpoint.url
        widens = widens or (data.get("enabled") is True and not endpoint.enabled)
    if widens:
        raise PermissionDenied(PHI_AUTHORITY)


def _secret_again(body: dict) -> str | None:
    """An endpoint's secret for the replay of the request that created it: never kept with the
    stored response, read again from the endpoint (its secret column is encrypted at rest)."""
    endpoint = WebhookEndpoint.objects.filter(pk=body.get("id")).only("secret").first()
    return endpoint.secret if endpoint is not None else None


SECRET_WITHHELD = {"secret": _secret_again}


def _disable_reason(request) -> str:
    """Why an endpoint was switched off through the API: by its client (which may switch it on
    again) or by staff signed in (whose decision a client may not undo)."""
    return API_DISABLED if isinstance(request.auth, ApiKey) else services.STAFF_DISABLED_REASON


def _client_may_enable(request, endpoint: WebhookEndpoint) -> bool:
    """An API client may switch its endpoint back on after the system disabled it (410, days of
    failures) or after it disabled it itself; a staff decision stays with staff."""
    if not isinstance(request.auth, ApiKey):
        return True  # staff through the API
    return endpoint.needs_attention or endpoint.disabled_reason == API_DISABLED


class WebhookEndpointListApi(generics.ListAPIView):
    """Webhook endpoints, newest first. POST registers one and answers with its signing secret,
    shown this once."""

    scope_resource = "webhooks"
    serializer_class = io.WebhookEndpointOutput
    pagination_class = CursorPagination

    def get_queryset(self):
        return _endpoints(self.request).select_related(None)

    @extend_schema(request=io.WebhookEndpointInput, responses={201: io.WebhookEndpointCreatedOutput})
    @idempotent(withheld=SECRET_WITHHELD)
    def post(self, request):
        data = _valid(io.WebhookEndpointInput, request.data)
        if "enabled" in data:
            raise ValidationError({"enabled": ["A new endpoint is enabled; disable it afterwards if need be."]})
        _check_phi_authority(request, data)
        endpoint, secret = services.webhook_endpoint_create(
            **data, owner=_owner(request), actor=Actor.from_request(request)
        )
        endpoint.secret = secret
        return Response(io.WebhookEndpointCreatedOutput(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookEndpointDetailApi(APIView):
    """One endpoint. PATCH changes it (never the secret; `enabled` switches it off or, after a
    fix, on again, clearing a system disable); DELETE disables it (its log stays)."""

    scope_resource = "webhooks"

    def _get(self, pk: int) -> WebhookEndpoint:
        return get_object_or_404(_endpoints(self.request), pk=pk)

    @extend_schema(responses=io.WebhookEndpointOutput)
    def get(self, request, pk: int):
        return Response(io.WebhookEndpointOutput(self._get(pk)).data)

    @extend_schema(request=io.WebhookEndpointInput, responses=io.WebhookEndpointOutput)
    def patch(self, request, pk: int):
        self._get(pk)  # 404 before 400
        data = _valid(io.WebhookEndpointInput, request.data, partial=True)
        enabled = data.pop("enabled", None)
        actor = Actor.from_request(request)

        def authorize(locked: WebhookEndpoint, changes: dict) -> dict:
            # Judged on the endpoint locked as it is when the change lands: a change racing this
            # one (medical fields switched on by someone who may) is either seen here or waits.
            _check_phi_authority(request, changes if enabled is None else {**changes, "enabled": enabled}, locked)
            if enabled is True and not locked.enabled and not _client_may_enable(request, locked):
                raise PermissionDenied(STAFF_DISABLED)
            return changes

        with transaction.atomic():
            endpoint = services.webhook_endpoint_update(
                endpoint=self._get(pk), data=data, actor=actor, authorize=authorize
            )
            if enabled is True and not endpoint.enabled:
                services.webhook_endpoint_enable(endpoint=endpoint, actor=actor)
            elif enabled is False and endpoint.enabled:
                services.webhook_endpoint_disable(endpoint=endpoint, actor=actor, reason=_disable_reason(request))
        return Response(io.WebhookEndpointOutput(endpoint).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, pk: int):
        endpoint = self._get(pk)
        if endpoint.enabled:
            services.webhook_endpoint_disable(
                endpoint=endpoint, actor=Actor.from_request(request), reason=_disable_reason(request)
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookEndpointTestApi(APIView):
    """Send a signed `webhook.test` event now and answer with the delivery's outcome."""

    required_scopes = {"POST": "webhooks:write"}

    @extend_schema(request=None, responses=io.WebhookDeliveryOutput)
    @idempotent()
    def post(self, request, pk: int):
        endpoint = get_object_or_404(_endpoints(request), pk=pk)
        delivery = services.webhook_endpoint_test(endpoint=endpoint, actor=Actor.from_request(request))
        return Response(io.WebhookDeliveryOutput(delivery).data)


class WebhookEndpointRotateSecretApi(APIView):
    """A new signing secret, shown this once; the old one keeps signing beside it for the
    overlap (24 h by default), so the receiver can switch over without missing a message."""

    required_scopes = {"POST": "webhooks:write"}

    @extend_schema(request=io.SecretRotationInput, responses=io.SecretRotationOutput)
    @idempotent(withheld=SECRET_WITHHELD)
    def post(self, request, pk: int):
        endpoint = get_object_or_404(_endpoints(request), pk=pk)
        data = _valid(io.SecretRotationInput, request.data)
        secret, until = services.webhook_endpoint_rotate_secret(
            endpoint=endpoint, actor=Actor.from_request(request), **data
        )
        body = {"id": endpoint.pk, "secret": secret, "previous_secret_until": until}
        return Response(io.SecretRotationOutput(body).data)


class WebhookEndpointDeliveriesApi(generics.ListAPIView):
    """An endpoint's delivery log, newest first."""

    scope_resource = "webhooks"
    serializer_class = io.WebhookDeliveryOutput
    pagination_class = CursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request, no pk
            return WebhookDelivery.objects.none()
        endpoint = get_object_or_404(_endpoints(self.request), pk=self.kwargs["pk"])
        return WebhookDelivery.objects.filter(endpoint=endpoint)


class WebhookEndpointStatsApi(APIView):
    """An endpoint's delivery statistics over the last 7 days: real deliveries (test sends are
    only counted, apart)."""

    scope_resource = "webhooks"

    @extend_schema(responses=io.WebhookStatsOutput)
    def get(self, request, pk: int):
        endpoint = get_object_or_404(_endpoints(request), pk=pk)
        return Response(selectors.webhook_stats(endpoints=WebhookEndpoint.objects.filter(pk=endpoint.pk)))


# ----------------------------------------------------------------------------- seed 003 aliases


def _seed_endpoint(endpoint: WebhookEndpoint, secret: str | None = None) -> dict:
    body = {
        "id": endpoint.pk,
        "name": endpoint.description,
        "url": endpoint.url,
        "events": endpoint.event_types,
        "active": endpoint.enabled,
    }
    if secret is not None:
        body["secret"] = secret
    return body


def _seed_stats(endpoint_id: int | None, stats: dict) -> dict:
    return {
        "endpointId": endpoint_id,
        "totalDeliveries": stats["total"],
        "successfulDeliveries": stats["succeeded"],
        "failedDeliveries": stats["failed"],
        "successRate": stats["success_rate"],
        "p95LatencyMs": stats["p95_latency_ms"],
        "testDeliveries": stats["test_sends"],
    }


class SeedWebhookEndpointsApi(APIView):
    """Seed 003: `POST /api/integrations/webhooks/endpoints` with `{name, url, events, secret?}`.
    The caller may supply its own secret; its underscore event names map onto ours."""

    required_scopes = {"POST": "webhooks:write"}

    @extend_schema(request=io.SeedEndpointInput, responses={201: io.SeedEndpointOutput})
    @idempotent(withheld=SECRET_WITHHELD)
    def post(self, request):
        data = _valid(io.SeedEndpointInput, request.data)
        endpoint, secret = services.webhook_endpoint_create(
            url=data["url"],
            description=data.get("name", ""),
            event_types=data.get("events", ()),
            secret=data.get("secret") or None,
            owner=_owner(request),
            actor=Actor.from_request(request),
        )
        return Response(_seed_endpoint(endpoint, secret), status=status.HTTP_201_CREATED)


class SeedWebhookStatsApi(APIView):
    """Seed 003: `GET /api/integrations/webhooks/stats/<endpointId>` (one endpoint) or
    `GET /api/integrations/webhooks/stats/` (all the caller's endpoints, with one entry each)."""

    required_scopes = {"GET": "webhooks:read"}

    @extend_schema(responses=io.SeedStatsOutput, operation_id="seed003_webhook_stats_all")
    def get(self, request, endpoint_id: int | None = None):
        if endpoint_id is not None:
            endpoint = get_object_or_404(_endpoints(request), pk=endpoint_id)
            stats = selectors.webhook_stats(endpoints=WebhookEndpoint.objects.filter(pk=endpoint.pk))
            return Response(_seed_stats(endpoint.pk, stats))
        endpoints = _endpoints(request)
        body = _seed_stats(None, selectors.webhook_stats(endpoints=endpoints))
        body["endpoints"] = [
            _seed_stats(e.pk, selectors.stats_shape(e.stat_total, e.stat_succeeded, e.stat_p95_ms, e.stat_test_sends))
            for e in selectors.webhook_endpoints_with_stats(endpoints.order_by("id")[:200])
        ]
        return Response(body)


class SeedWebhookStatsBareApi(SeedWebhookStatsApi):
    """Seed 003's `/stats/:endpointId?` with the id left out and no slash: `/stats` (Express
    matches it; CommonMiddleware would answer a 301 to `/stats/` instead)."""

    @extend_schema(responses=io.SeedStatsOutput, operation_id="seed003_webhook_stats_all_bare")
    def get(self, request, endpoint_id: int | None = None):
        return super().get(request, None)


class SeedWebhookStatsOneApi(SeedWebhookStatsApi):
    """Seed 003: one endpoint's statistics (its own operation in the schema)."""

    @extend_schema(responses=io.SeedStatsOutput, operation_id="seed003_webhook_stats_one")
    def get(self, request, endpoint_id: int | None = None):
        return super().get(request, endpoint_id)


class SeedWebhookTestApi(APIView):
    """Seed 003: `POST /api/integrations/webhooks/test/<endpointId>` sends a signed test event."""

    required_scopes = {"POST": "webhooks:write"}

    @extend_schema(request=None, responses=io.SeedTestOutput)
    @idempotent()
    def post(self, request, endpoint_id: int):
        endpoint = get_object_or_404(_endpoints(request), pk=endpoint_id)
        delivery = services.webhook_endpoint_test(endpoint=endpoint, actor=Actor.from_request(request))
        return Response(
            {
                "success": delivery.succeeded,
                "statusCode": delivery.status_code,
                "latencyMs": delivery.latency_ms,
                "error": delivery.error,
            }
        )
