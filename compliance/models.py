from django.conf import settings
from django.contrib.postgres.indexes import HashIndex
from django.db import models
from django.utils import timezone

from compliance.fields import EncryptedTextField

# Every column of an audit row, in the order the API and CSV exports show them.
AUDIT_COLUMNS = (
    "id",
    "occurred_at",
    "actor_kind",
    "actor_id",
    "action",
    "object_type",
    "object_id",
    "subject_id",
    "changes",
    "request_id",
    "ip",
    "chain_seq",
    "hash",
)


class AuditEvent(models.Model):
    """One thing that happened, by whom, to what. Append-only.

    Rows hold ids, field names and non-personal values only, never personal data, so that
    erasing a person never has to touch the audit trail that proves what was done.
    """

    class ActorKind(models.TextChoices):
        USER = "user"
        API_KEY = "api_key"
        AI = "ai"
        SYSTEM = "system"
        PROVIDER = "provider"

    # Every index on this table is one more index entry for each insert and each seal: only the
    # reads that need one have one (the admin's date filters and sort: audit_occurred_idx).
    occurred_at = models.DateTimeField(default=timezone.now)
    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    actor_id = models.CharField(max_length=64)
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    # The contact the event is about (the object itself, or the contact a note, ticket or
    # activity belongs to): serves "who viewed this patient" and seed 002's audit-log route.
    # A plain id, not a foreign key: audit rows outlive the erased contact.
    subject_id = models.BigIntegerField(null=True, blank=True, editable=False)
    # Set once by the sealer (compliance.chain), never by writers: writers insert unsealed rows
    # concurrently and the sealer orders them by id afterwards, so no writer waits on a chain lock.
    chain_seq = models.BigIntegerField(null=True, blank=True, unique=True, editable=False)
    hash = models.CharField(max_length=64, blank=True, null=True, editable=False)  # noqa: DJ001 NULL = unsealed, which the trigger tests

    class Meta:
        ordering = ["-id"]
        # The one permission that lets staff see medical fields (PHI) anywhere in the product.
        permissions = [("view_phi", "Can see medical fields (PHI)")]
        indexes = [
            models.Index(fields=["object_type", "object_id", "-id"], name="audit_object_idx"),
            models.Index(fields=["actor_kind", "actor_id", "-id"], name="audit_actor_idx"),
            models.Index(
                fields=["subject_id", "-id"], name="audit_subject_idx", condition=models.Q(subject_id__isnull=False)
            ),
            # The admin's date filters and sort. A B-tree, not a BRIN: with a BRIN the planner knows
            # the newest times only from statistics gathered days ago, guesses "today" holds no
            # rows, and sorted all of today's to show 50.
            models.Index(fields=["occurred_at"], name="audit_occurred_idx"),
            # The admin's and the API's filter by action, newest first.
            models.Index(fields=["action", "-id"], name="audit_action_idx"),
            # The admin's search by request id (exact): a hash index holds 4-byte codes of the
            # random ids, a B-tree the ids themselves, each insert on a random page.
            HashIndex(fields=["request_id"], name="audit_request_hash"),
            # The sealer's work queue: only unsealed rows, so it stays tiny however long the log.
            models.Index(fields=["id"], name="audit_unsealed_idx", condition=models.Q(chain_seq__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}:{self.object_id} by {self.actor_kind}:{self.actor_id}"


class AuditChainState(models.Model):
    """The audit chain's one-row ledger, written only by the database triggers.

    When retention purges the oldest sealed audit rows, the trigger records here the sequence
    number and hash of the last row removed, so `audit_verify` can still check the first
    remaining row against it. Direct UPDATE and DELETE are refused (compliance/README.md).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    checkpoint_seq = models.BigIntegerField(null=True, blank=True)
    checkpoint_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001 NULL = nothing purged yet
    purged_rows = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="audit_chain_state_single_row")]

    def __str__(self) -> str:
        return f"audit chain checkpoint {self.checkpoint_seq}"


class AdminNotice(models.Model):
    """Something staff must see on the admin index until someone marks it resolved: a broken
    audit chain, a break-glass access. `permission` limits who sees it (blank: all staff)."""

    class Level(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        ERROR = "error"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.WARNING)
    source = models.CharField(max_length=50)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    permission = models.CharField(max_length=100, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["-id"], name="notice_open_idx", condition=models.Q(resolved_at__isnull=True))]

    def __str__(self) -> str:
        return self.title


class BreakGlassGrant(models.Model):
    """Emergency access to one contact's medical fields for a staff member without view_phi:
    granted at once for BREAK_GLASS_MINUTES with a written reason, audited and notified."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="break_glass_grants")
    contact = models.ForeignKey("contacts.Contact", on_delete=models.CASCADE, related_name="+")
    reason = EncryptedTextField()  # PHI (may describe the patient), encrypted at rest
    granted_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["user", "contact", "-expires_at"], name="breakglass_active_idx")]

    def __str__(self) -> str:
        return f"break-glass {self.user_id} on contact {self.contact_id} until {self.expires_at:%Y-%m-%d %H:%M}"


# Consent, restriction, suppression, legal holds, export bundles and the erasure ledger live in
# their own module (compliance/README.md, "Consent and restriction", "GDPR / CCPA").
from compliance.models_privacy import (  # noqa: E402, F401
    Consent,
    Erasure,
    ExportBundle,
    LegalHold,
    ProcessingRestriction,
    Suppression,
)
