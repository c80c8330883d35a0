"""Leads, deals and pipelines, stage automations, assignment and scoring rules.

Rules staff can change (automations, assignment, scoring, CLV settings) are rows, not
constants; their defaults come from data migrations (seed 001 for the pipeline and its
automations)."""

from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.indexes import OpClass
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from compliance.fields import EncryptedCharField, EncryptedJSONField


class Lead(models.Model):
    """Someone's interest, captured from a source. A contact has at most one open lead."""

    class Source(models.TextChoices):
        WEBSITE_FORM = "website_form", "Website form"
        ASSESSMENT = "assessment", "Assessment"
        REFERRAL = "referral", "Referral"
        IMPORT = "import", "Import"
        API = "api", "API"
        EVENT = "event", "Event"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        NEW = "new", "New"
        CONTACTED = "contacted", "Contacted"
        QUALIFIED = "qualified", "Qualified"
        UNQUALIFIED = "unqualified", "Unqualified"
        CONVERTED = "converted", "Converted"

    OPEN_STATUSES = (Status.NEW, Status.CONTACTED, Status.QUALIFIED)

    contact = models.ForeignKey("contacts.Contact", on_delete=models.CASCADE, related_name="leads")
    source = models.CharField(max_length=20, choices=Source.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.NEW)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_leads",
        db_index=False,  # lead_owner_status_idx starts with owner
    )
    # PHI, encrypted at rest (compliance/fields.py): nothing filters on them.
    assessment = EncryptedJSONField(default=dict, blank=True, help_text="Assessment results (medical: PHI).")
    persona = EncryptedCharField(max_length=100, blank=True)
    utm_source = models.CharField("UTM source", max_length=100, blank=True)
    utm_medium = models.CharField("UTM medium", max_length=100, blank=True)
    utm_campaign = models.CharField("UTM campaign", max_length=100, blank=True)
    utm_term = models.CharField("UTM term", max_length=100, blank=True)
    utm_content = models.CharField("UTM content", max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Capture reuses the open lead; the index makes that hold under concurrent captures.
            models.UniqueConstraint(
                fields=["contact"],
                condition=Q(status__in=["new", "contacted", "qualified"]),
                name="lead_one_open_per_contact",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "-id"], name="lead_status_idx"),
            models.Index(fields=["source", "-id"], name="lead_source_idx"),
            # Owner filter, and the open-lead count behind assignment capacity.
            models.Index(fields=["owner", "status"], name="lead_owner_status_idx"),
            models.Index(fields=["created_at"], name="lead_created_idx"),
        ]

    def __str__(self) -> str:
        return f"lead #{self.pk} ({self.get_status_display()})"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class LeadStatusChange(models.Model):
    """History: every status change of a lead, by whom, why, when."""

    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="status_history")
    from_status = models.CharField(max_length=12, choices=Lead.Status.choices)
    to_status = models.CharField(max_length=12, choices=Lead.Status.choices)
    actor_kind = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=64)
    reason = models.CharField(max_length=200, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["lead", "-at"], name="lead_status_change_idx")]

    def __str__(self) -> str:
        return f"{self.from_status} → {self.to_status}"


class Pipeline(models.Model):
    name = models.CharField(max_length=100, unique=True)
    is_default = models.BooleanField(default=False)
    currency = models.CharField(
        max_length=3,
        default="USD",
        validators=[RegexValidator(r"\A[A-Z]{3}\Z", "A three-letter ISO 4217 code, in capitals.")],
        help_text="The currency of the stats' headline amounts: deals in other currencies are "
        "reported beside them, per currency, never added in.",
    )

    class Meta:
        ordering = ["-is_default", "name"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="pipeline_one_default")
        ]

    def __str__(self) -> str:
        return self.name


class Stage(models.Model):
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="stages")
    key = models.SlugField(max_length=50)
    name = models.CharField(max_length=100)
    order = models.PositiveSmallIntegerField(default=0)
    probability = models.DecimalField(
        max_digits=3,
        decimal_places=2,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text="Chance that a deal in this stage is won, 0 to 1.",
    )
    is_won = models.BooleanField(default=False)
    is_lost = models.BooleanField(default=False)

    class Meta:
        ordering = ["pipeline", "order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "key"], name="stage_key_per_pipeline"),
            models.CheckConstraint(condition=Q(probability__gte=0, probability__lte=1), name="stage_probability_0_1"),
            models.CheckConstraint(condition=~Q(is_won=True, is_lost=True), name="stage_not_won_and_lost"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_closed(self) -> bool:
        return self.is_won or self.is_lost


class Deal(models.Model):
    name = models.CharField(max_length=200)
    # deal_pipeline_stage_cur_idx starts with pipeline.
    pipeline = models.ForeignKey(Pipeline, on_delete=models.PROTECT, related_name="deals", db_index=False)
    # deal_stage_entered_idx starts with stage.
    stage = models.ForeignKey(Stage, on_delete=models.PROTECT, related_name="deals", db_index=False)
    amount = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    # deal_create gives a deal its pipeline's currency when none is named; USD here only for rows
    # written around it.
    currency = models.CharField(max_length=3, default="USD")
    close_date = models.DateField(null=True, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_deals",
        db_index=False,  # deal_owner_stage_cur_idx
    )
    contact = models.ForeignKey(
        "contacts.Contact",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deals",
        db_index=False,  # deal_contact_idx
    )
    company = models.ForeignKey(
        "contacts.Company", null=True, blank=True, on_delete=models.SET_NULL, related_name="deals"
    )
    plan = EncryptedCharField(  # PHI, encrypted at rest
        max_length=100, blank=True, help_text="When the deal carries a plan, winning it starts that subscription."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    stage_entered_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-id"]
        constraints = [models.CheckConstraint(condition=Q(amount__gte=0), name="deal_amount_non_negative")]
        indexes = [
            # Pipeline stats: GROUP BY stage and currency within a pipeline (and an owner), amounts
            # and currencies read from the index alone (an index-only scan).
            models.Index(
                fields=["pipeline", "stage"], include=["amount", "currency"], name="deal_pipeline_stage_cur_idx"
            ),
            models.Index(
                fields=["owner", "pipeline", "stage"], include=["amount", "currency"], name="deal_owner_stage_cur_idx"
            ),
            # The newest arrivals of a stage (the pipeline board), deals sitting in a stage too long.
            models.Index(fields=["stage", "-stage_entered_at"], name="deal_stage_entered_idx"),
            models.Index(fields=["created_at"], name="deal_created_idx"),
            # A contact's deals; their ids from the index alone (the admin's search by contact).
            models.Index(fields=["contact", "id"], name="deal_contact_idx"),
            # The admin's search by the start of a name, any case (leads.selectors.deal_ids_matching).
            models.Index(OpClass(Lower("name"), name="varchar_pattern_ops"), name="deal_name_prefix"),
            # The admin's sorts (either way; ties sorted by id).
            models.Index(fields=["name"], name="deal_name_idx"),
            models.Index(fields=["amount"], name="deal_amount_idx"),
            models.Index(fields=["close_date"], name="deal_close_date_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class DealStageChange(models.Model):
    """History: every stage a deal entered (from_stage is empty when it was created)."""

    deal = models.ForeignKey(Deal, on_delete=models.CASCADE, related_name="stage_history")
    from_stage = models.ForeignKey(Stage, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    to_stage = models.ForeignKey(Stage, on_delete=models.PROTECT, related_name="+")
    actor_kind = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=64)
    at = models.DateTimeField(default=timezone.now)
    days_in_previous_stage = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["deal", "-at"], name="deal_stage_change_deal_idx"),
            # Average days per stage: GROUP BY from_stage, days read from the index.
            models.Index(
                fields=["from_stage", "at"], include=["days_in_previous_stage"], name="deal_stage_change_from_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"deal #{self.deal_id}: {self.from_stage_id} → {self.to_stage_id}"


class StageRollup(models.Model):
    """Running totals per (pipeline, stage, currency) that make unfiltered pipeline stats
    O(stages x currencies).

    Maintained by statement-level PostgreSQL triggers on leads_deal and leads_dealstagechange
    (migrations 0003 and 0006), so every write path counts, services, bulk loads, COPY and
    cascades alike, and never by hand. Deals are counted and summed under their own currency
    (amounts in two currencies are never added); the moves out of a stage, which have none, under
    currency "". `leads.selectors.pipeline_rollup_drift` compares it with a full scan;
    `pipeline_rollup_rebuild` recomputes it (a nightly job checks and repairs)."""

    pipeline_id = models.BigIntegerField()
    stage_id = models.BigIntegerField()
    currency = models.CharField(max_length=3, blank=True, default="")
    deals = models.BigIntegerField(default=0)
    amount = models.DecimalField(max_digits=20, decimal_places=2, default=Decimal("0"))
    # Moves out of this stage, and the days spent in it before (AVG = days_sum / days_count).
    moves_out = models.BigIntegerField(default=0)
    days_sum = models.DecimalField(max_digits=30, decimal_places=6, default=Decimal("0"))
    days_count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["pipeline_id", "stage_id", "currency"], name="stage_rollup_key")]

    def __str__(self) -> str:
        return f"pipeline {self.pipeline_id} stage {self.stage_id} {self.currency or '(moves)'}: {self.deals} deals"


class StageAutomation(models.Model):
    """What entering a stage sets off (seed 001). Staff switch rows off rather than edit code."""

    class Action(models.TextChoices):
        CONTACT_ACTIVE_CUSTOMER = "contact_active_customer", "Contact becomes Active Customer"
        CREATE_SUBSCRIPTION = "create_subscription", "Start the deal's plan as a subscription"
        REQUEST_ONBOARDING = "request_onboarding", "Request onboarding"
        FEEDBACK_SURVEY = "feedback_survey", "Request a feedback survey"
        NOTIFY_MANAGER = "notify_manager", "Notify the owner's manager"

    # The order they run in when one stage has several: the lifecycle move comes first, so a
    # subscription started next takes the contact on from Active Customer to Subscriber.
    ORDER = (
        Action.CONTACT_ACTIVE_CUSTOMER,
        Action.CREATE_SUBSCRIPTION,
        Action.REQUEST_ONBOARDING,
        Action.FEEDBACK_SURVEY,
        Action.NOTIFY_MANAGER,
    )

    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="automations")
    action = models.CharField(max_length=30, choices=Action.choices)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["stage", "action"]
        constraints = [models.UniqueConstraint(fields=["stage", "action"], name="stage_automation_uniq")]

    def __str__(self) -> str:
        return f"{self.stage}: {self.get_action_display()}"


class LeadAssignmentRule(models.Model):
    """Gives a new lead an owner. Enabled rules are tried by priority (lowest first); the first
    that matches the lead and has someone with room picks them in turn (round robin)."""

    class Kind(models.TextChoices):
        ROUND_ROBIN = "round_robin", "Round robin within a team"
        REGION = "region", "By region"
        SOURCE = "source", "By source"

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    team = models.CharField(max_length=50, blank=True, help_text="Only staff of this team (empty: any team).")
    match_value = models.CharField(
        max_length=50, blank=True, help_text="Region (contact's region or country) or lead source this rule takes."
    )
    priority = models.PositiveSmallIntegerField(default=100, help_text="Lower runs first.")
    enabled = models.BooleanField(default=True)
    # Round-robin state: whom this rule picked last (read and written under SELECT ... FOR UPDATE).
    last_assigned = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    last_assigned_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        if self.kind in (self.Kind.REGION, self.Kind.SOURCE) and not self.match_value:
            raise ValidationError({"match_value": ["A region or source rule needs the value it matches."]})
        if self.kind == self.Kind.SOURCE and self.match_value not in Lead.Source.values:
            raise ValidationError({"match_value": [f"One of {', '.join(Lead.Source.values)}."]})


# Contact fields a profile rule may test, and how: text fields compare as text.
SCORABLE_FIELDS = {
    "email": "text",
    "phone": "text",
    "first_name": "text",
    "last_name": "text",
    "date_of_birth": "date",
    "city": "text",
    "region": "text",
    "country": "text",
    "time_zone": "text",
    "language": "text",
    "company": "relation",
    "source": "text",
    "engagement_tier": "text",
    "is_paid": "boolean",
    "onboarding_status": "text",
    "churn_risk": "number",
    "tags": "array",
}


class ScoringRule(models.Model):
    """One declared scoring rule. Lead score = min(100, sum of what the enabled rules give).

    Profile rules test a contact field; event rules give points per timeline activity of a
    type, halved every `half_life_days` (no half-life: no decay), at most `max_points` in all."""

    class Kind(models.TextChoices):
        PROFILE = "profile", "Profile field"
        EVENT = "event", "Activity"

    class Operator(models.TextChoices):
        PRESENT = "present", "is present"
        EQUALS = "equals", "equals"
        NOT_EQUALS = "not_equals", "does not equal"
        GTE = "gte", "is at least"
        LTE = "lte", "is at most"
        CONTAINS = "contains", "contains (tags)"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    field = models.CharField(max_length=30, blank=True, choices=[(f, f) for f in SCORABLE_FIELDS])
    operator = models.CharField(max_length=12, choices=Operator.choices, blank=True)
    value = models.CharField(max_length=100, blank=True)
    event_type = models.CharField(max_length=64, blank=True)
    points = models.SmallIntegerField(validators=[MinValueValidator(-100), MaxValueValidator(100)])
    half_life_days = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Event rules: days to halve the points."
    )
    max_points = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Event rules: the most this rule gives one contact."
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["kind", "name"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind="profile") & ~Q(field="") & ~Q(operator="")) | (Q(kind="event") & ~Q(event_type="")),
                name="scoring_rule_complete",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        if self.kind == self.Kind.PROFILE:
            if self.field not in SCORABLE_FIELDS or not self.operator:
                raise ValidationError({"field": ["A profile rule names a contact field and an operator."]})
            kind = SCORABLE_FIELDS[self.field]
            if self.operator in (self.Operator.GTE, self.Operator.LTE) and kind not in ("number", "date"):
                raise ValidationError({"operator": ["At least / at most apply to numbers and dates."]})
            if self.operator == self.Operator.CONTAINS and kind != "array":
                raise ValidationError({"operator": ["Contains applies to tags."]})
            if self.operator != self.Operator.PRESENT and self.value == "":
                raise ValidationError({"value": ["This operator compares with a value."]})
            if self.operator != self.Operator.PRESENT and kind == "relation":
                raise ValidationError({"operator": ["A relation can only be tested for presence."]})
        elif not self.event_type:
            raise ValidationError({"event_type": ["An event rule names an activity type."]})


class ClvSettings(models.Model):
    """CLV's one assumption staff may change: how many years a customer stays (one row, id 1)."""

    expected_lifetime_years = models.DecimalField(
        max_digits=4,
        decimal_places=1,
        default=Decimal("3"),
        validators=[MinValueValidator(Decimal("0.1"))],
        help_text="CLV = average order value * orders per year * this many years.",
    )

    class Meta:
        verbose_name = verbose_name_plural = "CLV settings"
        constraints = [models.CheckConstraint(condition=Q(id=1), name="clv_settings_singleton")]

    def __str__(self) -> str:
        return "CLV settings"


# Module-level names for the choice sets the API schema names (drf-spectacular's
# ENUM_NAME_OVERRIDES imports them by path).
LeadStatus = Lead.Status
LeadSource = Lead.Source
