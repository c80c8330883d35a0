"""Webhook event types: what outside subscribers see, and how our outbox topics map onto them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

EVENT_TYPES: tuple[str, ...] = (
    "contact.created",
    "contact.updated",
    "contact.merged",
    "contact.deleted",
    "lead.captured",
    "lead.status_changed",
    "deal.stage_changed",
    "deal.won",
    "deal.lost",
    "order.placed",
    "subscription.started",
    "subscription.cancelled",
    "consultation.requested",
    "consultation.scheduled",
    "assessment.completed",
    "email.engagement",
    "goal.completed",
    "churn_risk.changed",
)
TEST_EVENT = "webhook.test"

# Our outbox topic -> the public event type. Topics not listed (lead.assigned, deal.manager_notification,
# onboarding.requested, ...) are internal and never reach webhooks. Event types whose topic
# is named the same (consultation.requested, goal.completed, ...) map themselves when their
# app starts publishing them.
TOPIC_EVENT_TYPES: dict[str, str] = {
    **{name: name for name in EVENT_TYPES},
    "contact.lifecycle_changed": "contact.updated",
    "lead.status_updated": "lead.status_changed",
    "order.created": "order.placed",
}

# Seed 003's underscore names (its webhookSystem) -> ours.
SEED_EVENT_ALIASES: dict[str, str] = {
    "assessment_completed": "assessment.completed",
    "lead_captured": "lead.captured",
    "consultation_requested": "consultation.requested",
    "consultation_scheduled": "consultation.scheduled",
    "email_engagement": "email.engagement",
    "lead_status_updated": "lead.status_changed",
}


def event_types_for(topic: str, payload: dict[str, Any]) -> tuple[str, ...]:
    """The event types a message may be published as, the most specific first; () when the
    topic is internal. A stage change into a won or lost stage is deal.won / deal.lost, and
    still a deal.stage_changed to an endpoint that asked for that alone (else a subscriber to
    every stage change would miss the last one)."""
    if topic == "deal.stage_changed":
        if payload.get("won"):
            return ("deal.won", "deal.stage_changed")
        if payload.get("lost"):
            return ("deal.lost", "deal.stage_changed")
    found = TOPIC_EVENT_TYPES.get(topic)
    return (found,) if found else ()


def event_type_for(topic: str, payload: dict[str, Any], wanted: Iterable[str] = ()) -> str | None:
    """The event type a message is published as to an endpoint wanting `wanted` (empty: every
    type): the most specific of event_types_for it wants; None when it wants none of them."""
    names = event_types_for(topic, payload)
    wanted = set(wanted)
    return next((name for name in names if not wanted or name in wanted), None)


def normalize_event_type(name: str) -> str | None:
    """Our dotted name or a seed 003 alias -> our dotted name; None when unknown."""
    name = SEED_EVENT_ALIASES.get(name, name)
    return name if name in EVENT_TYPES else None
