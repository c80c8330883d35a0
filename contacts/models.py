from decimal import Decimal

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils import timezone

from compliance.fields import EncryptedCharField, EncryptedJSONField, EncryptedTextField
from contacts.lifecycle import Stage


class Company(models.Model):
    name = models.CharField(max_length=200)
    domain = models.CharField(max_length=253, null=True, blank=True, unique=True)
    industry = models.CharField(max_length=100, blank=True)
    size = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "companies"
        ordering = ["name"]
        indexes = [models.Index(Lower("name"), name="company_name_lower_idx")]
        constraints = [models.CheckConstraint(condition=Q(domain=Lower("domain")), name="company_domain_lower")]

    def __str__(self) -> str:
        return self.name


class Contact(models.Model):
    """One record per person. Email (normalized) and/or the app's user id identify them."""

    class Tier(models.TextChoices):
        BRONZE = "bronze"
        SILVER = "silver"
        GOLD = "gold"
        PLATINUM = "platinum"

    class Onboarding(models.TextChoices):
        CREATED = "created"
        ONBOARDING_DONE = "onboarding_done"

    # NULL, not "": both are unique only when present.
    email = models.EmailField(max_length=254, null=True, blank=True)  # noqa: DJ001
    external_id = models.CharField(  # noqa: DJ001
        "app user id", max_length=128, null=True, blank=True, help_text="The company app's user id (userId)."
    )
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    phone = models.CharField(max_length=20, blank=True, help_text="E.164, e.g. +14155550123.")
    date_of_birth = models.DateField(null=True, blank=True)
    address_line1 = models.CharField(max_length=200, blank=True)
    address_line2 = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    region = models.CharField(max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2.")
    time_zone = models.CharField(max_length=64, blank=True, help_text="IANA name, e.g. Europe/Berlin.")
    language = models.CharField(max_length=16, blank=True)
    company = models.ForeignKey(Company, null=True, blank=True, on_delete=models.SET_NULL, related_name="contacts")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="owned_contacts"
    )
    source = models.CharField(max_length=50, blank=True)
    lifecycle_stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.VISITOR)
    engagement_tier = models.CharField(max_length=10, choices=Tier.choices, default=Tier.BRONZE)
    lead_score = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    score_explanation = models.JSONField(default=list, blank=True)
    clv = models.DecimalField("CLV", max_digits=12, decimal_places=2, default=Decimal("0"))
    churn_risk = models.FloatField(default=0, validators=[MinValueValidator(0), MaxValueValidator(1)])
    is_paid = models.BooleanField(default=False)
    onboarding_status = models.CharField(max_length=20, choices=Onboarding.choices, default=Onboarding.CREATED)
    last_login_at = models.DateTimeField(null=True, blank=True)
    last_active_at = models.DateTimeField(null=True, blank=True)
    tags = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    properties = models.JSONField(default=dict, blank=True, help_text="Custom properties (see custom fields).")
    # For the conflict policy: per field group, when and from which source it was last written.
    group_timestamps = models.JSONField(default=dict, blank=True, editable=False)
    is_archived = models.BooleanField(default=False)
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="merged_from", editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("merge_contact", "Can merge contacts")]
        constraints = [
            # A merged-away contact may have given its identifiers to its survivor
            # (contacts.services.contact_merge); it stays archived, also once its survivor is
            # deleted (merged_into is then set to null).
            models.CheckConstraint(
                condition=Q(email__isnull=False)
                | Q(external_id__isnull=False)
                | Q(merged_into__isnull=False)
                | Q(is_archived=True),
                name="contact_has_identity",
            ),
            models.CheckConstraint(condition=Q(email=Lower("email")), name="contact_email_normalized"),
            models.UniqueConstraint(fields=["email"], condition=Q(email__isnull=False), name="contact_email_uniq"),
            models.UniqueConstraint(
                fields=["external_id"], condition=Q(external_id__isnull=False), name="contact_external_id_uniq"
            ),
            models.CheckConstraint(condition=Q(churn_risk__gte=0, churn_risk__lte=1), name="contact_churn_risk_0_1"),
            models.CheckConstraint(condition=Q(lead_score__lte=100), name="contact_lead_score_0_100"),
        ]
        indexes = [
            # Admin and API search: prefixes of email, names and phone (pattern opclasses let
            # LIKE 'x%' use the index whatever the database's collation).
            models.Index(OpClass(Lower("last_name"), name="varchar_pattern_ops"), name="contact_last_name_prefix"),
            models.Index(OpClass(Lower("first_name"), name="varchar_pattern_ops"), name="contact_first_name_prefix"),
            models.Index(OpClass("email", name="varchar_pattern_ops"), name="contact_email_prefix"),
            models.Index(OpClass("phone", name="varchar_pattern_ops"), name="contact_phone_prefix"),
            # Filtered lists read newest first, one index each: the API's (contacts not archived)
            # and the admin's (archived ones too, so not partial: a value few contacts have is
            # found at once, not by reading the table newest first).
            models.Index(fields=["lifecycle_stage", "-id"], name="contact_by_stage_idx"),
            models.Index(fields=["engagement_tier", "-id"], name="contact_by_tier_idx"),
            models.Index(fields=["owner", "-id"], name="contact_by_owner_idx"),
            models.Index(fields=["source", "-id"], name="contact_by_source_idx"),
            # The admin's "archived: yes" (few contacts), newest first.
            models.Index(fields=["-id"], name="contact_archived_idx", condition=Q(is_archived=True)),
            # The admin's sort by lead score (either way; ties, a few thousand, sorted by id).
            models.Index(fields=["lead_score"], name="contact_lead_score_idx"),
            models.Index(fields=["updated_at"], name="contact_updated_idx"),
            models.Index(fields=["created_at"], name="contact_created_idx"),
            models.Index(fields=["last_active_at"], name="contact_last_active_idx"),
            GinIndex(fields=["tags"], name="contact_tags_gin"),
        ]

    def __str__(self) -> str:
        name = f"{self.first_name} {self.last_name}".strip()
        return name or self.email or (f"user {self.external_id}" if self.external_id else f"contact {self.pk}")

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class CustomFieldDefinition(models.Model):
    """A custom property staff may set on contacts (stored in Contact.properties under `key`)."""

    class Type(models.TextChoices):
        STRING = "string"
        NUMBER = "number"
        BOOLEAN = "boolean"
        DATE = "date"
        CHOICE = "choice"

    key = models.SlugField(max_length=50, unique=True)
    label = models.CharField(max_length=100)
    type = models.CharField(max_length=10, choices=Type.choices)
    choices = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    required = models.BooleanField(default=False)
    help_text = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class Activity(models.Model):
    """The timeline: append-only."""

    # activity_latest_for_contact (contact, -occurred_at, -id) serves lookups by contact.
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="activities", db_index=False)
    type = models.CharField(max_length=64)
    occurred_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=50, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name_plural = "activities"
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["contact", "-occurred_at", "-id"], name="activity_latest_for_contact"),
            models.Index(fields=["type", "occurred_at"], name="activity_type_window"),
            # The admin's timeline of everyone (Meta.ordering), its date filters and its sort.
            models.Index(fields=["-occurred_at", "-id"], name="activity_latest_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} @ {self.occurred_at:%Y-%m-%d %H:%M}"


class Note(models.Model):
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    body = EncryptedTextField()  # PHI, encrypted at rest (compliance/fields.py)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["contact", "-created_at"], name="note_contact_idx")]

    def __str__(self) -> str:
        return f"note #{self.pk}"


class Ticket(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        PENDING = "pending"
        RESOLVED = "resolved"
        CLOSED = "closed"

    class Priority(models.TextChoices):
        LOW = "low"
        NORMAL = "normal"
        HIGH = "high"
        URGENT = "urgent"

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="tickets")
    subject = models.CharField(max_length=200)
    body = EncryptedTextField(blank=True)  # PHI, encrypted at rest
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    sla_due_at = models.DateTimeField(null=True, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="tickets"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    # The app's id for the ticket (support_ticket_created's `ticket_id`): the same ticket sent
    # again is the one we have. Unique per contact, not overall: the app's id space is its own
    # (maybe per user), and another person's ticket id must not refuse this person's ticket.
    # NULL, not "": none given (staff's tickets, an app sending no id).
    external_id = models.CharField(max_length=128, null=True, blank=True, editable=False)  # noqa: DJ001

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["contact", "-id"], name="ticket_contact_idx"),
            models.Index(fields=["status", "sla_due_at"], name="ticket_status_sla_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "external_id"],
                condition=Q(external_id__isnull=False),
                name="ticket_contact_external_id_uniq",
            )
        ]

    def __str__(self) -> str:
        return self.subject


class ExternalRef(models.Model):
    """Our object <-> its id at a provider (HubSpot, Salesforce, ...)."""

    provider = models.CharField(max_length=30)
    object_type = models.CharField(max_length=30)
    external_id = models.CharField(max_length=128)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "object_type", "external_id"], name="extref_provider_id_uniq"),
            models.UniqueConstraint(fields=["provider", "content_type", "object_id"], name="extref_provider_obj_uniq"),
        ]
        indexes = [models.Index(fields=["content_type", "object_id"], name="extref_object_idx")]

    def __str__(self) -> str:
        return f"{self.provider}:{self.object_type}:{self.external_id}"


class Order(models.Model):
    class Status(models.TextChoices):
        PAID = "paid"
        REFUNDED = "refunded"
        CANCELLED = "cancelled"

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="orders")
    external_id = models.CharField(max_length=128, null=True, blank=True, unique=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(0)])
    currency = models.CharField(max_length=3, default="USD")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PAID)
    paid_at = models.DateTimeField(null=True, blank=True)
    items = EncryptedJSONField(default=list, blank=True)  # PHI (what was bought), encrypted at rest
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["contact", "status"], name="order_contact_status_idx")]
        constraints = [models.CheckConstraint(condition=Q(amount__gte=0), name="order_amount_non_negative")]

    def __str__(self) -> str:
        return f"order #{self.pk} {self.amount} {self.currency}"


class Subscription(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"
        CANCELLED = "cancelled"

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="subscriptions")
    external_id = models.CharField(max_length=128, null=True, blank=True, unique=True)
    plan = EncryptedCharField(max_length=100)  # PHI (names a treatment), encrypted at rest
    amount = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    currency = models.CharField(max_length=3, default="USD")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    started_at = models.DateTimeField(default=timezone.now)
    renews_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["contact", "status"], name="subscription_contact_idx")]

    def __str__(self) -> str:
        return f"subscription #{self.pk} ({self.status})"  # not the plan: PHI, and str() shows everywhere


class LifecycleTransition(models.Model):
    """History: every lifecycle move, by whom, why, when."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="lifecycle_history")
    from_stage = models.CharField(max_length=20, choices=Stage.choices)
    to_stage = models.CharField(max_length=20, choices=Stage.choices)
    reason = models.CharField(max_length=200)
    actor_kind = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=64)
    occurred_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["contact", "-occurred_at"], name="lifecycle_contact_idx"),
            models.Index(fields=["to_stage", "occurred_at"], name="lifecycle_to_stage_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.from_stage} → {self.to_stage}"


class LifecycleRule(models.Model):
    """An event type that moves a contact to a stage (staff may switch a rule off or add one)."""

    event_type = models.CharField(max_length=64)
    to_stage = models.CharField(max_length=20, choices=Stage.choices)
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["event_type"]
        constraints = [models.UniqueConstraint(fields=["event_type", "to_stage"], name="lifecycle_rule_uniq")]

    def __str__(self) -> str:
        return f"{self.event_type} → {self.get_to_stage_display()}"


class LifecycleSettings(models.Model):
    """The thresholds, one row (id 1)."""

    at_risk_churn_risk = models.FloatField(
        default=0.7,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Churn risk above which → At-Risk.",
    )
    churned_after_days = models.PositiveIntegerField(default=90, help_text="Days without activity → Churned.")

    class Meta:
        verbose_name = verbose_name_plural = "lifecycle settings"
        constraints = [models.CheckConstraint(condition=Q(id=1), name="lifecycle_settings_singleton")]

    def __str__(self) -> str:
        return "Lifecycle settings"


class ContactDuplicateDismissal(models.Model):
    """Staff said these two are different people; the duplicate review stops listing them."""

    first = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    second = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["first", "second"], name="duplicate_dismissal_uniq"),
            models.CheckConstraint(condition=Q(first__lt=F("second")), name="duplicate_dismissal_ordered"),
        ]

    def __str__(self) -> str:
        return f"{self.first_id} ≠ {self.second_id}"


# Module-level names for the choice sets the API schema names (drf-spectacular's
# ENUM_NAME_OVERRIDES imports them by path).
TicketStatus = Ticket.Status
TicketPriority = Ticket.Priority
OrderStatus = Order.Status
SubscriptionStatus = Subscription.Status
