"""Defaults staff can change afterwards: the default pipeline (seed 001) with its stage
automations, a catch-all round-robin assignment rule, the scoring rules, CLV settings."""

from decimal import Decimal

from leads.models import ClvSettings, LeadAssignmentRule, Pipeline, ScoringRule, Stage, StageAutomation

STAGES = [
    # key, name, probability, won, lost
    ("appointment", "Appointment", "0.20", False, False),
    ("qualification", "Qualification", "0.40", False, False),
    ("proposal", "Proposal", "0.60", False, False),
    ("negotiation", "Negotiation", "0.80", False, False),
    ("closedwon", "Closed won", "1.00", True, False),
    ("closedlost", "Closed lost", "0.00", False, True),
]

AUTOMATIONS = [
    ("closedwon", "contact_active_customer"),
    ("closedwon", "create_subscription"),
    ("closedwon", "request_onboarding"),
    ("closedlost", "feedback_survey"),
    ("negotiation", "notify_manager"),
]

PROFILE_RULES = [
    # name, field, operator, value, points
    ("Email present", "email", "present", "", 5),
    ("Phone present", "phone", "present", "", 5),
    ("Works at a known company", "company", "present", "", 5),
    ("Paying customer", "is_paid", "equals", "true", 10),
]

EVENT_RULES = [
    # name, activity type, points, half-life days, at most
    ("Lead captured", "lead_captured", 10, 30, 10),
    ("Assessment started", "assessment_started", 5, 14, 5),
    ("Assessment completed", "assessment_completed", 20, 30, 20),
    ("Consultation submitted", "consultation_submitted", 25, 30, 25),
    ("Page viewed", "page_viewed", 1, 7, 10),
    ("Email opened", "email_opened", 1, 14, 5),
    ("Email clicked", "email_clicked", 3, 14, 9),
    ("Order placed", "order_placed", 15, 90, 30),
]


def ensure_defaults() -> None:
    """Seed each table only while it is empty (crm_platform.defaults)."""
    if not Pipeline.objects.exists():
        pipeline = Pipeline.objects.create(name="Sales", is_default=True)
        stages = {
            key: Stage.objects.create(
                pipeline=pipeline,
                key=key,
                name=name,
                order=order,
                probability=Decimal(probability),
                is_won=won,
                is_lost=lost,
            )
            for order, (key, name, probability, won, lost) in enumerate(STAGES)
        }
        StageAutomation.objects.bulk_create([StageAutomation(stage=stages[key], action=a) for key, a in AUTOMATIONS])
    if not LeadAssignmentRule.objects.exists():
        LeadAssignmentRule.objects.create(name="Everyone, in turn", kind="round_robin", priority=1000)
    if not ScoringRule.objects.exists():
        ScoringRule.objects.bulk_create(
            [
                *[
                    ScoringRule(name=name, kind="profile", field=field, operator=operator, value=value, points=points)
                    for name, field, operator, value, points in PROFILE_RULES
                ],
                *[
                    ScoringRule(
                        name=name,
                        kind="event",
                        event_type=event_type,
                        points=points,
                        half_life_days=half_life,
                        max_points=at_most,
                    )
                    for name, event_type, points, half_life, at_most in EVENT_RULES
                ],
            ]
        )
    ClvSettings.objects.get_or_create(id=1)
