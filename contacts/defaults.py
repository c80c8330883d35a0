"""The lifecycle rules and thresholds a new installation starts with (seed 004)."""

from contacts.models import LifecycleRule, LifecycleSettings

RULES = [
    ("lead_captured", "lead", "Lead captured."),
    ("assessment_started", "lead", "Health questionnaire started."),
    ("assessment_completed", "lead", "Health questionnaire completed."),
    ("consultation_submitted", "prospect", "Consultation submitted."),
    ("treatment_plan_updated", "patient", "Treatment plan created or updated."),
    ("prescription_approved", "patient", "Prescription approved."),
    ("order_placed", "active_customer", "First order placed."),
    ("recurring_order", "subscriber", "Second paid order."),
    ("subscription_started", "subscriber", "Subscription started."),
    ("referral_made", "advocate", "Referral made."),
    ("review_left", "advocate", "Review left."),
    ("any_activity", "won_back", "Any activity after Churned."),
]


def ensure_defaults() -> None:
    if not LifecycleRule.objects.exists():
        LifecycleRule.objects.bulk_create(
            [LifecycleRule(event_type=e, to_stage=s, description=d) for e, s, d in RULES], ignore_conflicts=True
        )
    LifecycleSettings.objects.get_or_create(id=1)
