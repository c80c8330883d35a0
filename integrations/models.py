"""integrations: outbound webhook endpoints and their delivery log."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone


class WebhookEndpoint(models.Model):
    """A URL that hears about our events, signed per Standard Webhooks.

    The secret is shown once, when the endpoint is made, and never again (API and admin
    leave it out). Field encryption comes with the compliance issue."""

    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    secret = models.CharField(max_length=200, editable=False)
    event_types = ArrayField(
        models.CharField(max_length=60), default=list, blank=True, help_text="Event types to send; empty: all."
    )
    enabled = models.BooleanField(default=True)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many deliveries a minute; empty: no limit."
    )
    may_receive_phi = models.BooleanField(
        default=False, help_text="Medical fields may be sent, and only those listed in PHI fields."
    )
    phi_fields = ArrayField(models.CharField(max_length=60), default=list, blank=True)
    owner = models.ForeignKey(
        "crm_platform.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_endpoints"
    )
    failing_since = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="First failure of the current unbroken run of failures."
    )
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(max_length=200, blank=True, editable=False)
    needs_attention = models.BooleanField(
        default=False, editable=False, help_text="Disabled by the system (410 Gone or days of failures)."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["owner", "-id"], name="webhook_endpoint_owner_idx")]

    def __str__(self) -> str:
        return self.description or self.url

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class WebhookDelivery(models.Model):
    """One attempt to deliver one message to one endpoint."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    message_id = models.BigIntegerField(null=True, blank=True, help_text="The outbox row; empty for test sends.")
    webhook_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=60)
    attempt = models.PositiveIntegerField(default=1)
    succeeded = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    error = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["endpoint", "-at"], name="webhook_delivery_endpoint_idx"),
            models.Index(fields=["message_id"], name="webhook_delivery_message_idx"),
            models.Index(fields=["at"], name="webhook_delivery_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.webhook_id} → {self.endpoint_id} #{self.attempt} ({self.status_code or self.error[:30]})"
