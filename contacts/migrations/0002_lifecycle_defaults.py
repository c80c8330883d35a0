from django.db import migrations

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


def create(apps, schema_editor):
    LifecycleRule = apps.get_model("contacts", "LifecycleRule")
    LifecycleSettings = apps.get_model("contacts", "LifecycleSettings")
    for event_type, to_stage, description in RULES:
        LifecycleRule.objects.get_or_create(
            event_type=event_type, to_stage=to_stage, defaults={"description": description}
        )
    LifecycleSettings.objects.get_or_create(id=1)


class Migration(migrations.Migration):
    dependencies = [("contacts", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
