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

    class Meta:
        ordering = ["-id"]
        # The one permission that lets staff see medical fields (PHI) anywhere in the product.
        permissions = [("view_phi", "Can see medical fields (PHI)")]
        indexes = [
            models.Index(fields=["object_type", "object_id", "-id"], name="audit_object_idx"),
            models.Index(fields=["actor_kind", "actor_id", "-id"], name="audit_actor_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}:{self.object_id} by {self.actor_kind}:{self.actor_id}"
