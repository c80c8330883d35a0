"""Output shapes shared by the leads API and its seed 003 aliases (no business logic).

Fields registered as PHI (a lead's assessment and persona, a deal's plan) are shown only to
callers holding `phi:read`: views pass `{"phi": True}` in the serializer context for them."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts.models import Activity, Contact
from crm_platform.api.phi import PhiFieldsMixin
from leads.models import Deal, Lead, Pipeline, Stage


class ContactSummaryOutput(serializers.ModelSerializer):
    class Meta:
        model = Contact
        fields = ["id", "email", "external_id", "first_name", "last_name", "phone", "lifecycle_stage", "lead_score"]
        read_only_fields = fields


class LeadOutput(PhiFieldsMixin, serializers.ModelSerializer):
    phi_fields = ("assessment", "persona")
    contact = ContactSummaryOutput(read_only=True)
    assessment = serializers.JSONField(read_only=True, required=False, help_text="Only with phi:read.")
    persona = serializers.CharField(read_only=True, required=False, help_text="Only with phi:read.")

    class Meta:
        model = Lead
        fields = [
            "id",
            "contact",
            "source",
            "status",
            "owner",
            "assessment",
            "persona",
            "utm_source",
            "utm_medium",
            "utm_campaign",
            "utm_term",
            "utm_content",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class StageOutput(serializers.ModelSerializer):
    class Meta:
        model = Stage
        fields = ["id", "key", "name", "order", "probability", "is_won", "is_lost"]
        read_only_fields = fields


class PipelineOutput(serializers.ModelSerializer):
    stages = StageOutput(many=True, read_only=True)

    class Meta:
        model = Pipeline
        fields = ["id", "name", "is_default", "currency", "stages"]
        read_only_fields = fields


class DealOutput(PhiFieldsMixin, serializers.ModelSerializer):
    phi_fields = ("plan",)
    stage = StageOutput(read_only=True)
    plan = serializers.CharField(read_only=True, required=False, help_text="Only with phi:read.")

    class Meta:
        model = Deal
        fields = [
            "id",
            "name",
            "pipeline",
            "stage",
            "amount",
            "currency",
            "close_date",
            "owner",
            "contact",
            "company",
            "plan",
            "stage_entered_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class CrmActivityOutput(PhiFieldsMixin, serializers.ModelSerializer):
    phi_fields = ("properties",)
    properties = serializers.JSONField(read_only=True, required=False, help_text="Only with phi:read.")

    class Meta:
        model = Activity
        fields = ["id", "type", "occurred_at", "source", "properties"]
        read_only_fields = fields


class CurrencyAmountsOutput(serializers.Serializer):
    currency = serializers.CharField(help_text="ISO 4217 code.")
    count = serializers.IntegerField()
    amount = serializers.DecimalField(max_digits=16, decimal_places=2)
    weighted_amount = serializers.DecimalField(max_digits=16, decimal_places=2)


HEADLINE = "Deals in the stats' `currency` only; the others are in `by_currency`, never added in."
BY_CURRENCY = "One entry per currency with deals here (the stats' own included), in code order."


class StageStatsOutput(serializers.Serializer):
    id = serializers.IntegerField()
    key = serializers.CharField()
    name = serializers.CharField()
    probability = serializers.DecimalField(max_digits=3, decimal_places=2)
    is_won = serializers.BooleanField()
    is_lost = serializers.BooleanField()
    count = serializers.IntegerField(help_text="Deals in this stage, every currency.")
    amount = serializers.DecimalField(max_digits=16, decimal_places=2, help_text=HEADLINE)
    weighted_amount = serializers.DecimalField(max_digits=16, decimal_places=2, help_text=HEADLINE)
    by_currency = CurrencyAmountsOutput(many=True, help_text=BY_CURRENCY)
    avg_days_in_stage = serializers.FloatField(allow_null=True, help_text="Average days deals spent here.")


class PipelineRefOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class PipelineTotalsOutput(serializers.Serializer):
    count = serializers.IntegerField(help_text="Every currency.")
    amount = serializers.DecimalField(max_digits=16, decimal_places=2, help_text=HEADLINE)
    weighted_amount = serializers.DecimalField(max_digits=16, decimal_places=2, help_text=HEADLINE)
    open_count = serializers.IntegerField()
    by_currency = CurrencyAmountsOutput(many=True, help_text=BY_CURRENCY)


class PipelineStatsOutput(serializers.Serializer):
    pipeline = PipelineRefOutput()
    currency = serializers.CharField(help_text="The pipeline's currency: that of every `amount` and `weighted_amount`.")
    stages = StageStatsOutput(many=True)
    totals = PipelineTotalsOutput()
    won = serializers.IntegerField()
    lost = serializers.IntegerField()
    win_rate = serializers.FloatField(allow_null=True, help_text="won / (won + lost); null when none closed.")


@extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
class StatusCountsField(serializers.DictField):
    pass


class CrmPipelineStatsOutput(serializers.Serializer):
    leads = StatusCountsField(help_text="Leads per status.")
    deals = PipelineStatsOutput(help_text="The default pipeline.")


class FunnelOutput(serializers.Serializer):
    funnel = serializers.CharField()
    from_stage = serializers.CharField()
    to_stage = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    entered = serializers.IntegerField(help_text="Contacts who entered the from-stage in [since, until).")
    converted = serializers.IntegerField(help_text="How many of them reached the to-stage.")
    rate = serializers.FloatField(allow_null=True)
    median_days = serializers.FloatField(allow_null=True, help_text="Median days from one stage to the other.")
