from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.utils import timezone

from compliance.fields import EncryptedJSONField


class ApiKey(models.Model):
    """A machine client's credential. Only a SHA-256 of the key is stored, with a short
    public prefix to find the row; the key itself is shown once, when it is made."""

    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    scopes = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    allowed_ips = ArrayField(
        models.CharField(max_length=50),
        default=list,
        blank=True,
        help_text="Addresses or networks (CIDR) the key may be used from; empty allows any.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    rotated_from = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="rotated_to", editable=False
    )
    lineage = models.BigIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="The first key of this key's rotation chain (empty: this key). The keys of one chain are one "
        "client: they share Idempotency-Keys, inbound events and rate limits.",
    )

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["-created_at"], name="apikey_created_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def owner(self) -> str:
        """Whose Idempotency-Keys, inbound events and rate limits these are: the client, the
        same across rotations (a request retried with the successor is still a retry)."""
        return f"key:{self.lineage or self.pk}"

    def is_active_at(self, when) -> bool:
        if self.revoked_at is not None and self.revoked_at <= when:
            return False
        return self.expires_at is None or self.expires_at > when

    @property
    def status(self) -> str:
        now = timezone.now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


class StaffProfile(models.Model):
    """What the CRM needs to know about a staff member: manager, coverage, capacity."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_profile")
    manager = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="reports"
    )
    team = models.CharField(max_length=50, blank=True)
    regions = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    sources = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    capacity = models.PositiveIntegerField(default=50, help_text="Open leads this person can hold.")
    accepts_leads = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"profile of {self.user}"


class OutboxMessage(models.Model):
    """Something the outside must hear about, written in the same transaction as the change.

    A row written by outbox_publish has no destination: the relay (integrations) routes it,
    writing one child row per interested destination (`parent` points back) and marking the
    parent `routed`; each child is then delivered, retried and dead-lettered on its own."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"
        DEAD = "dead"
        ROUTED = "routed"

    topic = models.CharField(max_length=100)
    destination = models.CharField(max_length=50, blank=True, help_text="Empty: routed by topic when relayed.")
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        related_name="children",
        # Purging a parent must not touch its children (they are purged on their own schedule).
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        help_text="The unrouted row this delivery was fanned out from.",
    )
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                name="outbox_due_idx",
                condition=models.Q(status__in=["pending", "failed"]),
            ),
            models.Index(fields=["object_type", "object_id", "id"], name="outbox_object_idx"),
            models.Index(fields=["topic", "-id"], name="outbox_topic_idx"),
            # The admin's filter and search by destination, newest first, and its list of them.
            models.Index(fields=["destination", "-id"], name="outbox_destination_idx"),
            # The router's claim: unrouted rows in id order.
            models.Index(
                fields=["id"], name="outbox_unrouted_idx", condition=models.Q(destination="", status="pending")
            ),
            # Per-destination ordering: "is there an earlier undelivered row for this object here?"
            models.Index(
                fields=["destination", "object_type", "object_id", "id"],
                name="outbox_dest_object_idx",
                condition=models.Q(status__in=["pending", "failed"]),
            ),
            models.Index(fields=["parent"], name="outbox_parent_idx", condition=models.Q(parent__isnull=False)),
            models.Index(fields=["status", "delivered_at"], name="outbox_purge_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.topic} {self.object_type}:{self.object_id} ({self.status})"

    @property
    def contact_id(self) -> int | None:
        """The contact a message about one is about (compliance.services.audit_subject reads it:
        "who viewed this patient" and break-glass cover the payloads of the contact's messages)."""
        if self.object_type == "contacts.contact" and self.object_id.isascii() and self.object_id.isdigit():
            return int(self.object_id)
        return None


class IdempotencyRecord(models.Model):
    """One Idempotency-Key of one client (API key or staff user): the request's fingerprint
    and, once done, the response to replay. Kept IDEMPOTENCY_TTL_DAYS, then purged.

    A stored response may hold whatever its route answers (a note's body, a plan): it is
    encrypted at rest as the medical fields it copies are, and a replay to a caller who has
    since lost phi:read is refused when the first caller had it (`phi_read`). GDPR erasure
    finds the responses naming a person by `subjects`: the keyed hashes of the response's text
    values and "contact:<id>" for each contact it names."""

    class Status(models.TextChoices):
        IN_FLIGHT = "in_flight"
        COMPLETED = "completed"

    owner = models.CharField(max_length=40, help_text="key:<id> or user:<id>")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.IN_FLIGHT)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = EncryptedJSONField(null=True, blank=True)
    phi_read = models.BooleanField(default=False, help_text="Stored for a caller who could read medical fields.")
    subjects = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="idempotency_owner_key_uniq")]
        indexes = [
            models.Index(fields=["created_at"], name="idempotency_created_idx"),
            GinIndex(fields=["subjects"], name="idempotency_subjects_gin"),
        ]

    def __str__(self) -> str:
        return f"{self.owner} {self.key} ({self.status})"
