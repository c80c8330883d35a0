"""Input and output shapes of the contacts API (no business logic: services decide)."""

from django.contrib.auth import get_user_model
from rest_framework import serializers

from contacts.lifecycle import Stage
from contacts.models import Activity, Company, Contact, Note, Order, Subscription, Ticket
from crm_platform.api.phi import PhiFieldsMixin

User = get_user_model()

CONTACT_FIELDS = [
    "id",
    "email",
    "external_id",
    "first_name",
    "last_name",
    "phone",
    "date_of_birth",
    "address_line1",
    "address_line2",
    "city",
    "region",
    "postal_code",
    "country",
    "time_zone",
    "language",
    "company",
    "owner",
    "source",
    "lifecycle_stage",
    "engagement_tier",
    "lead_score",
    "clv",
    "churn_risk",
    "is_paid",
    "onboarding_status",
    "last_login_at",
    "last_active_at",
    "tags",
    "properties",
    "is_archived",
    "merged_into",
    "created_at",
    "updated_at",
]


CLV_HELP = (
    "Customer lifetime value in the reporting currency (the server's CRM_REPORTING_CURRENCY, USD unless set), "
    "from the contact's paid orders in that currency only: orders in other currencies are not added in (there "
    "is no exchange rate). Recomputed nightly."
)

# ContactOutput's fields as database columns, for lists read with .values().
CONTACT_ROW_COLUMNS = [
    {"company": "company_id", "owner": "owner_id", "merged_into": "merged_into_id"}.get(f, f) for f in CONTACT_FIELDS
]


def contact_row(row: dict) -> dict:
    """A .values() row in ContactOutput's shape (ids under the relation's name, CLV as text)."""
    row["company"] = row.pop("company_id")
    row["owner"] = row.pop("owner_id")
    row["merged_into"] = row.pop("merged_into_id")
    row["clv"] = str(row["clv"])
    return row


class ContactOutput(serializers.ModelSerializer):
    class Meta:
        model = Contact
        fields = CONTACT_FIELDS
        read_only_fields = CONTACT_FIELDS
        extra_kwargs = {"clv": {"help_text": CLV_HELP}}


class ContactInput(serializers.Serializer):
    """Shapes only; the service normalizes and enforces the rules."""

    email = serializers.EmailField(max_length=254, required=False, allow_null=True, allow_blank=True)
    external_id = serializers.CharField(max_length=128, required=False, allow_null=True, allow_blank=True)
    first_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    phone = serializers.CharField(max_length=40, required=False, allow_blank=True)
    date_of_birth = serializers.DateField(required=False, allow_null=True)
    address_line1 = serializers.CharField(max_length=200, required=False, allow_blank=True)
    address_line2 = serializers.CharField(max_length=200, required=False, allow_blank=True)
    city = serializers.CharField(max_length=100, required=False, allow_blank=True)
    region = serializers.CharField(max_length=100, required=False, allow_blank=True)
    postal_code = serializers.CharField(max_length=20, required=False, allow_blank=True)
    country = serializers.CharField(max_length=2, required=False, allow_blank=True)
    time_zone = serializers.CharField(max_length=64, required=False, allow_blank=True)
    language = serializers.CharField(max_length=16, required=False, allow_blank=True)
    company = serializers.PrimaryKeyRelatedField(queryset=Company.objects.all(), required=False, allow_null=True)
    owner = serializers.PrimaryKeyRelatedField(
        queryset=User.objects.filter(is_staff=True), required=False, allow_null=True
    )
    source = serializers.CharField(max_length=50, required=False, allow_blank=True)
    engagement_tier = serializers.ChoiceField(choices=Contact.Tier.choices, required=False)
    churn_risk = serializers.FloatField(min_value=0, max_value=1, required=False)
    is_paid = serializers.BooleanField(required=False)
    onboarding_status = serializers.ChoiceField(choices=Contact.Onboarding.choices, required=False)
    last_login_at = serializers.DateTimeField(required=False, allow_null=True)
    last_active_at = serializers.DateTimeField(required=False, allow_null=True)
    tags = serializers.ListField(child=serializers.CharField(max_length=50), required=False, max_length=50)
    properties = serializers.DictField(required=False)


class ContactCreateInput(ContactInput):
    lifecycle_stage = serializers.ChoiceField(choices=Stage.choices, required=False)


class MergeInput(serializers.Serializer):
    loser = serializers.PrimaryKeyRelatedField(queryset=Contact.objects.all())


class LifecycleInput(serializers.Serializer):
    stage = serializers.ChoiceField(choices=Stage.choices)
    reason = serializers.CharField(max_length=200)


class ActivityOutput(PhiFieldsMixin, serializers.ModelSerializer):
    phi_fields = ("properties",)

    class Meta:
        model = Activity
        fields = ["id", "type", "occurred_at", "source", "properties"]
        read_only_fields = fields


class CompanyOutput(serializers.ModelSerializer):
    class Meta:
        model = Company
        fields = ["id", "name", "domain", "industry", "size", "created_at", "updated_at"]
        read_only_fields = fields


class CompanyInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    domain = serializers.CharField(max_length=253, required=False, allow_null=True, allow_blank=True)
    industry = serializers.CharField(max_length=100, required=False, allow_blank=True)
    size = serializers.IntegerField(min_value=0, required=False, allow_null=True)


class NoteOutput(PhiFieldsMixin, serializers.ModelSerializer):
    phi_fields = ("body",)

    class Meta:
        model = Note
        fields = ["id", "contact", "author", "body", "created_at"]
        read_only_fields = fields


class NoteInput(serializers.Serializer):
    contact = serializers.PrimaryKeyRelatedField(queryset=Contact.objects.all())
    body = serializers.CharField(max_length=20000)


class TicketOutput(PhiFieldsMixin, serializers.ModelSerializer):
    phi_fields = ("body",)

    class Meta:
        model = Ticket
        fields = ["id", "contact", "subject", "body", "status", "priority", "sla_due_at", "owner", "created_at"]
        read_only_fields = fields


class TicketInput(serializers.Serializer):
    contact = serializers.PrimaryKeyRelatedField(queryset=Contact.objects.all())
    subject = serializers.CharField(max_length=200)
    body = serializers.CharField(max_length=20000, required=False, allow_blank=True)
    priority = serializers.ChoiceField(choices=Ticket.Priority.choices, required=False)


class TicketUpdateInput(serializers.Serializer):
    status = serializers.ChoiceField(choices=Ticket.Status.choices, required=False)
    priority = serializers.ChoiceField(choices=Ticket.Priority.choices, required=False)
    subject = serializers.CharField(max_length=200, required=False)
    body = serializers.CharField(max_length=20000, required=False, allow_blank=True)


class OrderOutput(PhiFieldsMixin, serializers.ModelSerializer):
    phi_fields = ("items",)

    class Meta:
        model = Order
        fields = ["id", "contact", "external_id", "amount", "currency", "status", "paid_at", "items", "created_at"]
        read_only_fields = fields


class OrderInput(serializers.Serializer):
    contact = serializers.PrimaryKeyRelatedField(queryset=Contact.objects.all())
    external_id = serializers.CharField(max_length=128, required=False, allow_null=True)
    amount = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0)
    currency = serializers.CharField(min_length=3, max_length=3, required=False)
    status = serializers.ChoiceField(choices=Order.Status.choices, required=False)
    paid_at = serializers.DateTimeField(required=False, allow_null=True)
    items = serializers.ListField(child=serializers.DictField(), required=False, max_length=500)


class SubscriptionOutput(PhiFieldsMixin, serializers.ModelSerializer):
    phi_fields = ("plan",)

    class Meta:
        model = Subscription
        fields = [
            "id",
            "contact",
            "external_id",
            "plan",
            "amount",
            "currency",
            "status",
            "started_at",
            "renews_at",
            "cancelled_at",
        ]
        read_only_fields = fields


class SubscriptionInput(serializers.Serializer):
    contact = serializers.PrimaryKeyRelatedField(queryset=Contact.objects.all())
    external_id = serializers.CharField(max_length=128, required=False, allow_null=True)
    plan = serializers.CharField(max_length=100)
    amount = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False)
    currency = serializers.CharField(min_length=3, max_length=3, required=False)
    started_at = serializers.DateTimeField(required=False)
    renews_at = serializers.DateTimeField(required=False, allow_null=True)


class BulkUpsertInput(serializers.Serializer):
    """Each row is checked by the service, so one bad row cannot fail the request."""

    contacts = serializers.ListField(child=serializers.JSONField(), min_length=1, max_length=1000)


class BulkUpsertResult(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["created", "updated", "error"])
    id = serializers.IntegerField(required=False)
    errors = serializers.DictField(required=False)


class BulkUpsertOutput(serializers.Serializer):
    results = BulkUpsertResult(many=True)
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    error = serializers.IntegerField()
