"""The lifecycle state machine (seed 004): ten stages and the one table of allowed moves.

Which event moves a contact where, and the thresholds (churn risk for At-Risk, days inactive
for Churned), are data staff change in the admin (LifecycleRule, LifecycleSettings); which
moves are allowed at all is declared here, once.
"""

from django.db import models


class Stage(models.TextChoices):
    VISITOR = "visitor", "Visitor"
    LEAD = "lead", "Lead"
    PROSPECT = "prospect", "Prospect"
    PATIENT = "patient", "Patient"
    ACTIVE_CUSTOMER = "active_customer", "Active Customer"
    SUBSCRIBER = "subscriber", "Subscriber"
    ADVOCATE = "advocate", "Advocate"
    AT_RISK = "at_risk", "At-Risk"
    CHURNED = "churned", "Churned"
    WON_BACK = "won_back", "Won-Back"


DEFINITIONS = {
    Stage.VISITOR: "Session tracked.",
    Stage.LEAD: "Health questionnaire started or lead captured.",
    Stage.PROSPECT: "Consultation submitted.",
    Stage.PATIENT: "Treatment plan created.",
    Stage.ACTIVE_CUSTOMER: "First order placed.",
    Stage.SUBSCRIBER: "Subscription started or recurring orders.",
    Stage.ADVOCATE: "Referral made or review left.",
    Stage.AT_RISK: "Engagement decline: churn risk above the threshold.",
    Stage.CHURNED: "Inactive beyond the threshold.",
    Stage.WON_BACK: "Activity after Churned.",
}

_FUNNEL = [
    Stage.VISITOR,
    Stage.LEAD,
    Stage.PROSPECT,
    Stage.PATIENT,
    Stage.ACTIVE_CUSTOMER,
    Stage.SUBSCRIBER,
    Stage.ADVOCATE,
]
_ENGAGED = {Stage.PATIENT, Stage.ACTIVE_CUSTOMER, Stage.SUBSCRIBER, Stage.ADVOCATE, Stage.WON_BACK}

# from-stage -> the stages it may move to. Forward along the funnel (skipping ahead is allowed:
# a first order can arrive before any consultation), engaged stages may become At-Risk or
# Churned, At-Risk recovers or churns, and only Won-Back leaves Churned.
ALLOWED: dict[str, frozenset[str]] = {}
for _i, _stage in enumerate(_FUNNEL):
    ALLOWED[_stage] = frozenset(_FUNNEL[_i + 1 :])
for _stage in _ENGAGED:
    ALLOWED[_stage] = ALLOWED.get(_stage, frozenset()) | {Stage.AT_RISK, Stage.CHURNED}
ALLOWED[Stage.AT_RISK] = frozenset({Stage.ACTIVE_CUSTOMER, Stage.SUBSCRIBER, Stage.ADVOCATE, Stage.CHURNED})
ALLOWED[Stage.CHURNED] = frozenset({Stage.WON_BACK})
ALLOWED[Stage.WON_BACK] = frozenset(
    {Stage.ACTIVE_CUSTOMER, Stage.SUBSCRIBER, Stage.ADVOCATE, Stage.AT_RISK, Stage.CHURNED}
)
# Advocate is the customer who recommends (seed 004: "VIP Customer", the advocacy funnel
# Subscriber -> Advocate): a referral or review from someone who never bought leaves them where
# they are.
for _stage in (Stage.VISITOR, Stage.LEAD, Stage.PROSPECT):
    ALLOWED[_stage] -= {Stage.ADVOCATE}
# Leads and prospects that never bought can go cold too.
ALLOWED[Stage.LEAD] |= {Stage.CHURNED}
ALLOWED[Stage.PROSPECT] |= {Stage.CHURNED}


def is_allowed(from_stage: str, to_stage: str) -> bool:
    return to_stage in ALLOWED.get(from_stage, frozenset())


def reached(stage: str) -> list[str]:
    """The stages that show a contact got to `stage` of the funnel: it and those after it (a
    contact may skip ahead: a patient whose first purchase is a subscription is a customer)."""
    return [str(s) for s in _FUNNEL[_FUNNEL.index(stage) :]] if stage in _FUNNEL else [str(stage)]


# Seed 004's four funnels: (from stage, to stage).
FUNNELS = {
    "consultation": (Stage.VISITOR, Stage.PATIENT),
    "purchase": (Stage.PATIENT, Stage.ACTIVE_CUSTOMER),
    "subscription": (Stage.ACTIVE_CUSTOMER, Stage.SUBSCRIBER),
    "advocacy": (Stage.SUBSCRIBER, Stage.ADVOCATE),
}
