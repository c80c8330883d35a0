"""integrations: input and output shapes of the webhook endpoint API (no logic here)."""

from rest_framework import serializers

from integrations.events import EVENT_TYPES, SEED_EVENT_ALIASES
from integrations.models import WebhookDelivery, WebhookEndpoint

EVENT_HELP = (
    f"Event types (empty: all): {', '.join(EVENT_TYPES)}; seed 003 names ({', '.join(SEED_EVENT_ALIASES)}) too."
)


class WebhookEndpointOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = (
            "id",
            "url",
            "description",
            "event_types",
            "enabled",
            "rate_limit_per_minute",
            "may_receive_phi",
            "phi_fields",
            "disabled_at",
            "disabled_reason",
            "needs_attention",
            "created_at",
        )
        read_only_fields = fields


class WebhookEndpointCreatedOutput(WebhookEndpointOutput):
    secret = serializers.CharField(help_text="The signing secret (whsec_...). Shown only in this response.")

    class Meta(WebhookEndpointOutput.Meta):
        fields = (*WebhookEndpointOutput.Meta.fields, "secret")
        read_only_fields = fields


class WebhookEndpointInput(serializers.Serializer):
    url = serializers.URLField(max_length=2000)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=60), required=False, max_length=50, help_text=EVENT_HELP
    )
    rate_limit_per_minute = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    may_receive_phi = serializers.BooleanField(required=False)
    phi_fields = serializers.ListField(child=serializers.CharField(max_length=60), required=False, max_length=50)
    enabled = serializers.BooleanField(
        required=False, help_text="PATCH only: false disables the endpoint, true enables it again (after a fix)."
    )


class SecretRotationInput(serializers.Serializer):
    secret = serializers.CharField(
        max_length=200, required=False, help_text="Your own new secret (whsec_..., or 12+ characters); else generated."
    )
    overlap_hours = serializers.IntegerField(
        min_value=0,
        max_value=168,
        required=False,
        help_text="How long the old secret keeps signing beside the new (default 24; 0: stop it now).",
    )


class SecretRotationOutput(serializers.Serializer):
    id = serializers.IntegerField(help_text="The endpoint.")
    secret = serializers.CharField(help_text="The new signing secret. Shown only in this response.")
    previous_secret_until = serializers.DateTimeField(
        allow_null=True, help_text="Until then deliveries carry both signatures."
    )


class WebhookDeliveryOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = (
            "id",
            "webhook_id",
            "event_type",
            "attempt",
            "succeeded",
            "status_code",
            "latency_ms",
            "response_excerpt",
            "error",
            "at",
        )
        read_only_fields = fields


REAL = "Deliveries of real messages over the last 7 days; test sends are not among them."
TESTS = "Test sends (POST .../test) over the last 7 days, counted apart from everything else."


class WebhookStatsOutput(serializers.Serializer):
    total = serializers.IntegerField(help_text=REAL)
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True, help_text="0..1; null without deliveries.")
    p95_latency_ms = serializers.FloatField(allow_null=True)
    test_sends = serializers.IntegerField(help_text=TESTS)


# Seed 003 shapes (its webhookSystem: registerEndpoint({name, url, events, secret})).


class SeedEndpointInput(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    url = serializers.URLField(max_length=2000)
    events = serializers.ListField(child=serializers.CharField(max_length=60), required=False, max_length=50)
    secret = serializers.CharField(max_length=200, required=False, allow_blank=True)


class SeedEndpointOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    active = serializers.BooleanField()
    secret = serializers.CharField(required=False)


class SeedStatsOutput(serializers.Serializer):
    endpointId = serializers.IntegerField(allow_null=True)
    totalDeliveries = serializers.IntegerField(help_text=REAL)
    successfulDeliveries = serializers.IntegerField()
    failedDeliveries = serializers.IntegerField()
    successRate = serializers.FloatField(allow_null=True)
    p95LatencyMs = serializers.FloatField(allow_null=True)
    testDeliveries = serializers.IntegerField(help_text=TESTS)


class SeedTestOutput(serializers.Serializer):
    success = serializers.BooleanField()
    statusCode = serializers.IntegerField(allow_null=True)
    latencyMs = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
