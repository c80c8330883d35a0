"""integrations: outbound webhook endpoints and their delivery log."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from compliance.fields import EncryptedCharField


class WebhookEndpoint(models.Model):
    """A URL that hears about our events, signed per Standard Webhooks.

    The secret is shown once, when the endpoint is made, and never again (API and admin
    leave it out). Field encryption comes with the compliance issue."""

    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    # Encrypted at rest (compliance.fields): a database dump must not let anyone sign as us.
    secret = EncryptedCharField(max_length=200, editable=False)
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


class SyncEvent(models.Model):
    """One change that crossed our boundary, in or out: what it touched, how it ended, and a
    digest of its payload (never the payload: the row must hold no personal values).

    Inbound rows are written once, by the ingest path. Outbound rows are one per delivered
    outbox row (`outbox_message`), updated after each attempt."""

    class Direction(models.TextChoices):
        INBOUND = "inbound"
        OUTBOUND = "outbound"

    class Status(models.TextChoices):
        PENDING = "pending"
        APPLIED = "applied"  # inbound: applied; outbound: delivered
        SKIPPED_STALE = "skipped_stale"
        FAILED = "failed"
        DEAD = "dead"

    direction = models.CharField(max_length=8, choices=Direction.choices)
    provider = models.CharField(max_length=50, help_text='Who sent or receives it: "app", "webhook:12", "hubspot".')
    event_type = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    external_id = models.CharField(max_length=128, blank=True, help_text="The object's id on the other side.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    payload_digest = models.CharField(
        max_length=64, help_text="Keyed HMAC-SHA256 of the payload's canonical JSON (never the payload)."
    )
    outbox_message = models.ForeignKey(
        "crm_platform.OutboxMessage",
        null=True,
        blank=True,
        related_name="+",
        # Outbox rows are purged sooner (OUTBOX_RETENTION_DAYS) than sync events: a dangling id is fine.
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
    )
    occurred_at = models.DateTimeField(null=True, blank=True, help_text="When it happened at the source.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["outbox_message"],
                condition=models.Q(outbox_message__isnull=False),
                name="sync_event_outbox_uniq",
            )
        ]
        indexes = [
            models.Index(fields=["created_at"], name="sync_event_created_idx"),
            models.Index(fields=["object_id"], name="sync_event_object_idx"),
            models.Index(fields=["external_id"], name="sync_event_external_idx", condition=~models.Q(external_id="")),
            models.Index(fields=["payload_digest"], name="sync_event_digest_idx"),
            # Staff look for what went wrong: a small index of failed and dead rows, newest first.
            models.Index(
                fields=["status", "-id"],
                name="sync_event_problem_idx",
                condition=models.Q(status__in=["failed", "dead"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.direction} {self.event_type} {self.object_type}:{self.object_id} ({self.status})"
