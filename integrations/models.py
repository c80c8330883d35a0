"""integrations: outbound webhook endpoints and their delivery log."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex, HashIndex
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
    # After a rotation, the old secret also signs until previous_secret_until (CONTRACTS: several
    # space-separated signatures during rotation), so receivers can switch over without a gap.
    previous_secret = EncryptedCharField(max_length=200, null=True, blank=True, editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
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
            # Digests are random: a B-tree of them (64 characters each) grew to half the table's
            # size and took each insert to a random page; a hash index holds 4-byte hash codes.
            HashIndex(fields=["payload_digest"], name="sync_event_digest_hash"),
            # Staff look for what went wrong or has yet to happen: a small index of every row not
            # applied (applied is how nearly every row ends), newest first.
            models.Index(
                fields=["status", "-id"], name="sync_event_unapplied_idx", condition=~models.Q(status="applied")
            ),
            # The admin's filters, newest first: an event type, a provider or a direction few rows
            # have is found at once, not by reading the log newest first. Nearly every row is the
            # app's inbound stream, which reading the log newest first finds at once: the provider
            # and direction indexes leave it out, so it pays for one index here, not three.
            models.Index(fields=["event_type", "-id"], name="sync_event_type_idx"),
            models.Index(
                fields=["provider", "-id"], name="sync_event_provider_idx", condition=~models.Q(provider="app")
            ),
            models.Index(fields=["-id"], name="sync_event_outbound_idx", condition=models.Q(direction="outbound")),
        ]

    def __str__(self) -> str:
        return f"{self.direction} {self.event_type} {self.object_type}:{self.object_id} ({self.status})"


# An applied inbox row that still names its user (see InboundEvent's indexes).
INBOX_APPLIED_NAMED = models.Q(status="applied") & (~models.Q(user_email="") | ~models.Q(user_external_id=""))


class InboundEvent(models.Model):
    """The inbox: an app event the API accepted (202) and the applier has yet to apply, or has.

    A request checks the event (envelope, schema, a user the CRM knows) and writes this one row,
    which is also the request's Idempotency-Key record: (owner, key) is unique, the request's
    hash is kept, and a replay's answer is rebuilt from the row. The `integrations.inbox_apply`
    task applies pending rows in id order, many at a time, through integrations.inbound
    (integrations/inbox.py). The payload and the user's names are cleared once applied; rows are kept
    IDEMPOTENCY_TTL_DAYS (retention), then purged."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPLIED = "applied"
        FAILED = "failed"

    class Route(models.TextChoices):
        EVENT = "event", "POST /api/v1/events"
        BATCH = "batch", "POST /api/v1/events/batch"
        APP_EVENT = "app_event", "POST /api/crm/webhooks/app-event"

    owner = models.CharField(max_length=64, help_text='Whose key: "key:<api key id>" or "user:<staff id>".')
    key = models.CharField(max_length=260, help_text="Idempotency-Key; in a batch, event:<the event's id>.")
    request_hash = models.CharField(max_length=64)
    route = models.CharField(max_length=16, choices=Route.choices)
    type = models.CharField(max_length=50)
    user_external_id = models.CharField(max_length=128, blank=True, help_text="Cleared once applied.")
    user_email = models.CharField(max_length=254, blank=True, help_text="Cleared once applied.")
    creates_user = models.BooleanField(default=False, help_text="May name a user the CRM does not know yet.")
    payload = models.JSONField(null=True, blank=True, help_text="The event as accepted; cleared once applied.")
    actor = models.JSONField(help_text="Who sent it: [kind, id, request id, ip].")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    result = models.JSONField(null=True, blank=True, help_text="Applied: what it made. Failed: the errors.")
    received_at = models.DateTimeField(default=timezone.now)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="inbound_event_key_uniq")]
        indexes = [
            # The applier takes pending rows in id order.
            models.Index(fields=["id"], name="inbound_event_pending_idx", condition=models.Q(status="pending")),
            # A request for a user whose sign-up is still pending knows that user.
            models.Index(
                fields=["user_external_id"],
                name="inbound_event_pend_ext_idx",
                condition=models.Q(status="pending", creates_user=True) & ~models.Q(user_external_id=""),
            ),
            models.Index(
                fields=["user_email"],
                name="inbound_event_pend_email_idx",
                condition=models.Q(status="pending", creates_user=True) & ~models.Q(user_email=""),
            ),
            models.Index(
                fields=["status", "-id"], name="inbound_event_failed_idx", condition=models.Q(status="failed")
            ),
            # Applied rows still naming their user: applied by a version before the applier
            # cleared names (migration 0008), so few or none; GDPR erasure finds them here.
            models.Index(fields=["id"], name="inbound_event_named_idx", condition=INBOX_APPLIED_NAMED),
            BrinIndex(fields=["received_at"], name="inbound_event_received_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.pk} ({self.status})"
