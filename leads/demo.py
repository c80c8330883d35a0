"""Demo data of the leads app: a few hundred people captured as leads, walked along the
lifecycle by real timeline events and orders, and deals spread over the pipeline.

Everything goes through the services, so timelines, lifecycle history, stage history,
automations, audit and outbox rows are the real thing. Idempotent: skips when its leads exist.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.utils import timezone

from contacts.services import activity_record, order_record
from leads.models import Lead, Pipeline
from leads.services import (
    clv_recompute,
    deal_create,
    deal_move_stage,
    lead_capture,
    lead_scores_recompute,
    lead_set_status,
)

DOMAIN = "leads.demo.example"
PEOPLE = 200
FIRST = ["Ava", "Ben", "Chloe", "Dev", "Elif", "Finn", "Grace", "Hugo", "Isla", "Jon", "Kai", "Lena", "Mateo", "Nora"]
LAST = ["Okafor", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jensen", "Kowalski"]
SOURCES = ["website_form"] * 4 + ["assessment"] * 3 + ["referral"] * 2 + ["event", "api", "import"]
COUNTRIES = ["US", "US", "US", "GB", "DE", "CA", "AU"]
PERSONAS = ["Strategic Contributor", "Curious Explorer", "Busy Professional", "Health Optimizer"]
PLANS = [("Foundation monthly", Decimal("79")), ("Foundation annual", Decimal("790")), ("Premium", Decimal("149"))]
CAMPAIGNS = ["spring-checkup", "newsletter", "partner-clinic", ""]


def seed(*, actor, rng, stdout) -> str:
    if Lead.objects.filter(contact__email__endswith=f"@{DOMAIN}").exists():
        return "demo leads already loaded"
    owners = list(get_user_model().objects.filter(username__in=["sam.sales", "riley.sales"]).order_by("pk"))
    pipeline = Pipeline.objects.filter(is_default=True).prefetch_related("stages").first()
    stages = {stage.key: stage for stage in pipeline.stages.all()} if pipeline else {}
    now = timezone.now()
    contact_ids, deals = [], 0
    for i in range(PEOPLE):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        source = rng.choice(SOURCES)
        assessed = source == "assessment" or rng.random() < 0.3
        lead = lead_capture(
            actor=actor,
            source=source,
            email=f"{first}.{last}.{i}@{DOMAIN}".lower(),
            first_name=first,
            last_name=last,
            country=rng.choice(COUNTRIES),
            persona=rng.choice(PERSONAS) if assessed else "",
            assessment={"readiness_score": rng.randint(20, 95), "sleep_hours": rng.choice([5, 6, 7, 8])}
            if assessed
            else None,
            owner=rng.choice(owners) if owners else None,
            utm_source=rng.choice(["google", "newsletter", "partner", ""]),
            utm_campaign=rng.choice(CAMPAIGNS),
        )
        contact = lead.contact
        contact_ids.append(contact.pk)
        depth = rng.random()
        journey = _journey(contact=contact, depth=depth, assessed=assessed, actor=actor, rng=rng, now=now)
        lead_set_status(lead=lead, status=_lead_status(depth, rng), actor=actor, reason="demo")
        if stages and depth > 0.4:
            _deal(contact=contact, depth=depth, journey=journey, stages=stages, owners=owners, actor=actor, rng=rng)
            deals += 1
    scored = lead_scores_recompute(actor=actor, contact_ids=contact_ids)
    valued = clv_recompute(actor=actor, contact_ids=contact_ids)
    return f"{PEOPLE} leads, {deals} deals; {scored} scores and {valued} lifetime values computed"


def _journey(*, contact, depth, assessed, actor, rng, now) -> dict:
    """Timeline events that take the contact as far along the funnel as `depth` says."""
    start = now - dt.timedelta(days=rng.randint(5, 170), hours=rng.randint(0, 23))
    at = start + dt.timedelta(hours=rng.randint(1, 30))
    if rng.random() < 0.4:
        activity_record(contact=contact, type="page_viewed", actor=actor, occurred_at=at, source="web")
    if assessed:
        at += dt.timedelta(hours=rng.randint(1, 48))
        activity_record(contact=contact, type="assessment_completed", actor=actor, occurred_at=at, source="app")
    steps = [
        (0.45, "consultation_submitted"),
        (0.6, "treatment_plan_updated"),
    ]
    for threshold, event in steps:
        if depth > threshold:
            at += dt.timedelta(days=rng.randint(1, 12))
            activity_record(contact=contact, type=event, actor=actor, occurred_at=at, source="app")
    orders = 0
    if depth > 0.7:
        orders = 1 + (depth > 0.82) + (depth > 0.9)
        for _ in range(orders):
            at += dt.timedelta(days=rng.randint(3, 30))
            amount = Decimal(rng.choice([49, 79, 99, 149, 199]))
            order_record(contact=contact, amount=amount, actor=actor, paid_at=min(at, now))
    if depth > 0.95:
        activity_record(contact=contact, type="review_left", actor=actor, occurred_at=min(at, now), source="app")
    return {"orders": orders}


def _lead_status(depth: float, rng) -> str:
    if depth > 0.7:
        return Lead.Status.CONVERTED
    if depth > 0.45:
        return Lead.Status.QUALIFIED
    if depth > 0.2:
        return rng.choice([Lead.Status.CONTACTED, Lead.Status.UNQUALIFIED])
    return Lead.Status.NEW


def _deal(*, contact, depth, journey, stages, owners, actor, rng) -> None:
    plan, price = rng.choice(PLANS)
    deal = deal_create(
        actor=actor,
        name=f"{contact.full_name} - {plan}",
        amount=price * rng.choice([1, 1, 2, 3]),
        stage=stages["appointment"],
        owner=rng.choice(owners) if owners else None,
        contact=contact,
        plan=plan if journey["orders"] >= 2 else "",
        close_date=(timezone.now() + dt.timedelta(days=rng.randint(-30, 60))).date(),
    )
    # A few steps each, so stage history and days-in-stage have something to show.
    if journey["orders"]:
        path = ["proposal", "negotiation", "closedwon"]
    elif depth > 0.6 and rng.random() < 0.5:
        path = ["proposal", "closedlost"]
    else:
        path = [rng.choice(["qualification", "proposal", "negotiation"])] if rng.random() < 0.7 else []
    for key in path:
        deal = deal_move_stage(deal=deal, stage=stages[key], actor=actor)
