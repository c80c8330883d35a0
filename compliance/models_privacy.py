"""Consent, restriction of processing, suppression, legal holds, GDPR export bundles and the
erasure ledger (compliance/README.md, "Consent and restriction" and "GDPR / CCPA").

Imported by compliance.models so Django registers them under the `compliance` app. The
person is their subject: they point at `contacts.Contact` by its string reference and never
import contacts code.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


class Consent(models.Model):
    """One consent decision: a grant or a revocation, for one purpose on one channel.

    Rows are never edited except `is_current`, which moves to the newest decision of the same
    (contact, purpose, channel, third party): the older rows stay as the history and the proof.
    """

    class Purpose(models.TextChoices):
        MARKETING_EMAIL = "marketing_email", "Marketing email"
        MARKETING_SMS = "marketing_sms", "Marketing SMS (explicit, TCPA)"
        TRANSACTIONAL = "transactional", "Transactional messages"
        ANALYTICS = "analytics", "Analytics tracking"
        THIRD_PARTY_SHARING = "third_party_sharing", "Sharing with a named third party"
        AI_PROCESSING = "ai_processing", "AI processing"

    class Channel(models.TextChoices):
        ANY = "any", "Any channel"
        EMAIL = "email", "Email"
        SMS = "sms", "SMS"
        PUSH = "push", "Push"
        PHONE = "phone", "Phone"
        IN_APP = "in_app", "In app"

    contact = models.ForeignKey("contacts.Contact", on_delete=models.CASCADE, related_name="consents")
    purpose = models.CharField(max_length=30, choices=Purpose.choices)
    channel = models.CharField(max_length=10, choices=Channel.choices, default=Channel.ANY)
    third_party = models.CharField(
        max_length=100, blank=True, help_text="The named recipient, for sharing with a third party."
    )
    granted = models.BooleanField()
    source = models.CharField(max_length=100, help_text="Where the decision was taken: signup form, app settings, ...")
    # Proof of the decision (GDPR Art. 7(1), TCPA): where from, and which text the person saw.
    proof_ip = models.GenericIPAddressField("IP address", null=True, blank=True)
    proof_user_agent = models.CharField("user agent", max_length=400, blank=True)
    text_version = models.CharField(max_length=100, blank=True, help_text="Version of the consent text shown.")
    granted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    recorded_at = models.DateTimeField(default=timezone.now, editable=False)
    actor_kind = models.CharField(max_length=16, editable=False)
    actor_id = models.CharField(max_length=64, editable=False)
    is_current = models.BooleanField(default=True, editable=False)

    class Meta:
        ordering = ["-recorded_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "purpose", "channel", "third_party"],
                condition=Q(is_current=True),
                name="consent_one_current",
            ),
            models.CheckConstraint(
                condition=Q(granted=True, granted_at__isnull=False) | Q(granted=False, revoked_at__isnull=False),
                name="consent_decision_dated",
            ),
        ]
        indexes = [models.Index(fields=["contact", "-recorded_at"], name="consent_contact_idx")]

    def __str__(self) -> str:
        what = f"{self.get_purpose_display()} ({self.channel}{f', {self.third_party}' if self.third_party else ''})"
        return f"{what}: {'granted' if self.granted else 'revoked'}"


class ProcessingRestriction(models.Model):
    """GDPR Art. 18: while active (not lifted), the contact is left out of marketing, provider
    sync and AI processing. One active restriction per contact."""

    contact = models.ForeignKey("contacts.Contact", on_delete=models.CASCADE, related_name="processing_restrictions")
    reason = models.CharField(max_length=300)
    placed_at = models.DateTimeField(default=timezone.now)
    placed_by_kind = models.CharField(max_length=16)
    placed_by_id = models.CharField(max_length=64)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by_kind = models.CharField(max_length=16, blank=True)
    lifted_by_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-placed_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["contact"], condition=Q(lifted_at__isnull=True), name="restriction_one_active"
            )
        ]

    def __str__(self) -> str:
        return f"restriction of contact {self.contact_id} ({'lifted' if self.lifted_at else 'active'})"

    @property
    def is_active(self) -> bool:
        return self.lifted_at is None


class Suppression(models.Model):
    """An email, phone or app user id that must not come back (erased, or asked not to be
    contacted): only its keyed hash (compliance.crypto.hmac_digest of the normalised value) is
    stored."""

    class Kind(models.TextChoices):
        EMAIL = "email"
        PHONE = "phone"
        EXTERNAL_ID = "external_id", "app user id"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    digest = models.CharField(max_length=64, help_text="HMAC-SHA256 of the normalised value.")
    reason = models.CharField(max_length=30, default="erasure")
    created_at = models.DateTimeField(default=timezone.now)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_reason = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "digest"], condition=Q(lifted_at__isnull=True), name="suppression_one_active"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.digest[:12]}…"


class LegalHold(models.Model):
    """While a hold is in place (not released) the contact cannot be erased."""

    contact = models.ForeignKey("contacts.Contact", on_delete=models.PROTECT, related_name="legal_holds")
    reason = models.CharField(
        max_length=300, help_text="Shown to whoever tries to erase the contact; no personal data."
    )
    placed_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    placed_at = models.DateTimeField(default=timezone.now)
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-placed_at", "-id"]
        indexes = [
            models.Index(fields=["contact"], condition=Q(released_at__isnull=True), name="legal_hold_active_idx")
        ]

    def __str__(self) -> str:
        return f"legal hold on contact {self.contact_id} ({'released' if self.released_at else 'active'})"


class ExportBundle(models.Model):
    """A GDPR/CCPA export of everything about one person: a zip (JSON + one CSV per table),
    encrypted with compliance.crypto, downloadable by a signed link until `expires_at`, then
    purged by the retention job."""

    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    contact = models.ForeignKey(
        "contacts.Contact", null=True, blank=True, on_delete=models.SET_NULL, related_name="export_bundles"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    requested_by_kind = models.CharField(max_length=16)
    requested_by_id = models.CharField(max_length=64)
    requested_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # The Fernet token of the zip (bytes); never shown in the admin.
    # The encrypted zip. Not called `data`: the PHI guard drops registered PHI names at any
    # depth of every outbound payload, and `data` is the Standard Webhooks envelope's key.
    ciphertext = models.BinaryField(null=True, blank=True, editable=False)
    size = models.PositiveIntegerField(null=True, blank=True, help_text="Bytes of the zip (before encryption).")
    tables = models.JSONField(default=dict, blank=True, help_text="Rows exported per table.")
    error = models.CharField(max_length=200, blank=True)
    downloads = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["expires_at"], name="export_bundle_expires_idx")]

    def __str__(self) -> str:
        return f"export {self.pk} ({self.status})"


class Erasure(models.Model):
    """The ledger of erasures: that contact <id> was erased, when, by whom, and how many rows
    per table. Holds no personal value (the ids name nothing once the contacts are gone;
    `subject_digests` are keyed hashes of the app user ids, so a repeated request by user id is
    recognised), which is what makes a second erasure answer like the first."""

    contact_id = models.BigIntegerField(unique=True)
    subject_digests = models.JSONField(default=list, blank=True, help_text="HMACs of the app user ids.")
    erased_at = models.DateTimeField(default=timezone.now)
    actor_kind = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=64)
    contact_ids = models.JSONField(default=list, help_text="Every contact row erased (the merged-away ones too).")
    counts = models.JSONField(default=dict, help_text="Rows deleted or anonymised per table.")

    class Meta:
        ordering = ["-erased_at"]
        # The staff permission behind the API scope gdpr:write (export and erasure).
        permissions = [("gdpr_request", "Can run GDPR/CCPA export and erasure")]

    def __str__(self) -> str:
        return f"erasure of contact {self.contact_id}"
