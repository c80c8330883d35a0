from django.db import models
from django.utils import timezone


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

    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    actor_id = models.CharField(max_length=64)
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
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
