"""Inbound app events: the declared types, their payload schemas and handlers.

An event is `{"type", "occurred_at", "user": {"external_id", "email"}, "properties", "source"}`.
Each type declares its properties' schema (integrations/properties.py: the names it knows and what
each must be, checked at the door) and either a handler that calls the
CRM services (orders, subscriptions, tickets, leads, profiles: one event at a time) or nothing
but the timeline, taken many at a time by integrations.inbound_timeline (with, for logins and
onboarding, the engagement field it writes). Adding a type is one entry in EVENT_TYPES. Contact
fields go through the conflict policy (contacts/conflict.py): an event older than what a field
group last saw is *stale* and lands on the timeline without being applied.

`events_ingest` applies any number of parsed events in the caller's transaction and returns one
Outcome each. The API's routes check events (`event_parse`) and queue them in the inbox
(integrations/inbox.py), whose applier runs them through `events_ingest` many at a time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from compliance.services import audit_record
from compliance.suppression import digest as identifier_digest
from compliance.suppression import suppression_lift
from contacts import services as contacts
from contacts.models import Activity, Contact
from crm_platform.actor import Actor
from crm_platform.errors import ConflictError
from integrations import sync
from integrations.inbound_timeline import UNKNOWN_USER, Outcome, TimelineBatch
from integrations.properties import (
    Properties,
    Schema,
    Serialized,
    choice,
    date,
    email,
    flat_errors,
    identifier,
    integer,
    listing,
    mapping,
    moment,
    number,
    structured,
    text,
)


class Event(NamedTuple):
    """A parsed event. Immutable; a named tuple rather than a frozen dataclass because a batch
    builds a thousand of them per request and the applier as many again (0.8 against 2.6 us)."""

    type: str
    occurred_at: dt.datetime
    user: dict[str, str]
    properties: dict[str, Any]
    source: str = "app"


@dataclass(frozen=True)
class EventType:
    # Its properties: a serializer (Serialized) for a handler that needs converted values, else
    # the names the CRM knows (Properties; any other name is kept as sent).
    schema: Schema
    # One event at a time through the CRM services; None: the timeline path (many at a time).
    handler: Callable[[Event, Actor, Contact | None], dict[str, Any]] | None = None
    creates_user: bool = False  # may the event name a user we do not know yet?
    # Timeline path: the engagement fields the event writes on its contact (conflict policy).
    contact_fields: Callable[[Event], dict[str, Any]] | None = None
    # The person signing up again: their email and phone leave compliance's suppression list
    # (audited) before the contact is written, so the sign-up is not refused.
    lifts_suppression: bool = False
    # Timeline path: (event, contact {"id", "email", "external_id"}, activity id) -> (outbox
    # topic, payload) for what outside systems hear of it (webhooks); None: nothing.
    announces: Callable[[Event, dict[str, Any], int], tuple[str, dict[str, Any]]] | None = None
    # Properties naming someone other than the event's user (name, "email" or "phone"): kept
    # only as a keyed hash (`_pseudonymised`), never as sent.
    other_people: tuple[tuple[str, str], ...] = ()
    # Timeline path: whether the user did it. A reminder the platform schedules (seed 004's
    # "refill reminder due", "subscription renewal approaching") lands on the timeline but
    # neither marks the contact active nor wins a churned one back ("any_activity").
    user_acted: bool = True


# ----------------------------------------------------------------------------- schemas

EMAIL, PHONE = "email", "phone"  # the kinds of `other_people`, as compliance.suppression.digest takes them


class ProfileSchema(serializers.Serializer):
    first_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    phone = serializers.CharField(max_length=40, required=False, allow_blank=True)
    email = serializers.EmailField(required=False)
    time_zone = serializers.CharField(max_length=64, required=False, allow_blank=True)
    language = serializers.CharField(max_length=16, required=False, allow_blank=True)
    country = serializers.CharField(max_length=2, required=False, allow_blank=True)


class OrderSchema(serializers.Serializer):
    order_id = serializers.CharField(max_length=128)
    amount = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=Decimal("0"))
    currency = serializers.CharField(min_length=3, max_length=3, required=False)
    items = serializers.ListField(child=serializers.DictField(), required=False, max_length=500)


class SubscriptionSchema(serializers.Serializer):
    subscription_id = serializers.CharField(max_length=128)
    plan = serializers.CharField(max_length=100, required=False)
    amount = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=Decimal("0"), required=False)
    currency = serializers.CharField(min_length=3, max_length=3, required=False)


class SubscriptionStartedSchema(SubscriptionSchema):
    plan = serializers.CharField(max_length=100, error_messages={"required": "A started subscription names its plan."})


class TicketSchema(serializers.Serializer):
    ticket_id = serializers.CharField(max_length=128, required=False)  # the app's id: sent twice, one ticket
    subject = serializers.CharField(max_length=200)
    body = serializers.CharField(max_length=20000, required=False, allow_blank=True)
    priority = serializers.ChoiceField(choices=["low", "normal", "high", "urgent"], required=False)


class LeadSchema(serializers.Serializer):
    source = serializers.CharField(max_length=30, required=False)
    first_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    persona = serializers.CharField(max_length=100, required=False, allow_blank=True)
    assessment = serializers.DictField(required=False)


# ----------------------------------------------------------------------------- handlers

_PROFILE_FIELDS = ("first_name", "last_name", "phone", "time_zone", "language", "country")


def _sync(event: Event, actor: Actor, **fields) -> tuple[Contact, list[str]]:
    contact, _, stale = contacts.contact_sync(
        actor=actor,
        sync_source=event.source,
        occurred_at=event.occurred_at,
        email=event.user.get("email"),
        external_id=event.user.get("external_id"),
        **fields,
    )
    return contact, sorted(stale)


def _timeline(event: Event, actor: Actor, contact: Contact, stale: list[str] | None = None, **extra) -> dict:
    properties = dict(event.properties)
    if stale:
        properties["_stale_fields"] = stale
    activity = contacts.activity_record(
        contact=contact,
        type=event.type,
        occurred_at=event.occurred_at,
        source=event.source,
        properties=properties,
        actor=actor,
    )
    return {"contact": contact.pk, "activity": activity.pk, "stale": stale or [], **extra}


def on_profile(event: Event, actor: Actor, contact: Contact | None) -> dict:
    fields = {k: event.properties[k] for k in _PROFILE_FIELDS if k in event.properties}
    contact, stale = _sync(event, actor, **fields)
    return _timeline(event, actor, contact, stale)


def onboarding_done(event: Event) -> dict:
    return {"onboarding_status": Contact.Onboarding.ONBOARDING_DONE}


def logged_in(event: Event) -> dict:
    return {"last_login_at": event.occurred_at}


ORDER_DIFFERS = "This order was recorded with another amount or currency; it is not applied again."


def on_order_placed(event: Event, actor: Actor, contact: Contact | None) -> dict:
    p = event.properties
    # The same order id with another amount (a correction, or the sender's bug) is not the
    # order we have: failed, for the sender and staff to see, not "applied" unchanged.
    with _conflict_as("properties.order_id", contacts.ORDER_DIFFERS, ORDER_DIFFERS):
        order, created = contacts.order_record(
            contact=contact,
            amount=p["amount"],
            currency=p.get("currency", "USD"),
            items=p.get("items", []),
            external_id=p["order_id"],
            paid_at=event.occurred_at,
            actor=actor,
        )
    return {"contact": contact.pk, "order": order.pk, "created": created}


@contextlib.contextmanager
def _conflict_as(field: str, code: str, message: str):
    """The service's ConflictError `code` as this event's field error (`message`; `{fields}`:
    the fields the conflict names); any other conflict as it is."""
    try:
        yield
    except ConflictError as exc:
        if exc.code != code:
            raise
        raise ValidationError({field: [message.format(fields=_listed(list(exc.fields)))]}) from None


def _listed(names: list[str]) -> str:
    """ "plan", "plan and amount", "plan, amount and currency"."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


SUBSCRIPTION_DIFFERS = "This subscription was recorded with another {fields}; it is not applied again."


def on_subscription_started(event: Event, actor: Actor, contact: Contact | None) -> dict:
    p = event.properties
    # As for orders: the same subscription id started again with another plan, amount or
    # currency is not the subscription we have (one recorded by its cancellation first is
    # filled in from this event instead).
    with _conflict_as("properties.subscription_id", contacts.SUBSCRIPTION_DIFFERS, SUBSCRIPTION_DIFFERS):
        subscription, created = contacts.subscription_start(
            contact=contact,
            plan=p["plan"],
            amount=p.get("amount", Decimal("0")),
            currency=p.get("currency", "USD"),
            started_at=event.occurred_at,
            external_id=p["subscription_id"],
            actor=actor,
        )
    return {"contact": contact.pk, "subscription": subscription.pk, "created": created}


def on_subscription_cancelled(event: Event, actor: Actor, contact: Contact | None) -> dict:
    # Unknown yet (its start not arrived: events out of order) it is recorded cancelled, and
    # the start fills it in later without making it active.
    with _conflict_as("properties.subscription_id", "subscription_conflict", "This subscription is another user's."):
        subscription = contacts.subscription_cancel_by_external_id(
            contact=contact,
            external_id=event.properties["subscription_id"],
            plan=event.properties.get("plan"),
            at=event.occurred_at,
            actor=actor,
        )
    return {"contact": contact.pk, "subscription": subscription.pk}


TICKET_DIFFERS = "This ticket was recorded with another {fields}; it is not applied again."


def on_ticket(event: Event, actor: Actor, contact: Contact | None) -> dict:
    p = event.properties
    # As for orders: the contact's ticket id again with another subject or body is not the
    # ticket we have.
    with _conflict_as("properties.ticket_id", contacts.TICKET_DIFFERS, TICKET_DIFFERS):
        ticket = contacts.ticket_create(
            contact=contact,
            subject=p["subject"],
            body=p.get("body", ""),
            priority=p.get("priority", "normal"),
            external_id=p.get("ticket_id"),
            actor=actor,
        )
    return {"contact": contact.pk, "ticket": ticket.pk}


def on_lead_captured(event: Event, actor: Actor, contact: Contact | None) -> dict:
    from leads.services import lead_capture

    p = event.properties
    lead = lead_capture(
        actor=actor,
        email=event.user.get("email"),
        external_id=event.user.get("external_id"),
        source=p.get("source", "api"),
        persona=p.get("persona", ""),
        assessment=p.get("assessment"),
        synced=(event.source, event.occurred_at),
        **{name: p[name] for name in ("first_name", "last_name") if p.get(name)},  # none given: kept
    )
    return {"contact": lead.contact_id, "lead": lead.pk, "stale": lead.stale_fields}


def assessment_completed(event: Event, contact: dict[str, Any], activity_id: int) -> tuple[str, dict[str, Any]]:
    """assessment.completed for webhooks (seed 003). Who completed one, and when, travel as
    plain fields; everything about the assessment (which one: a screening's name is medical
    too; scores, answers, results) travels under `assessment`, and the persona under `persona`:
    medical fields the PHI guard drops unless an endpoint is allowed them, so nothing the app
    sends can leave as a plain field by accident."""
    properties = dict(event.properties)
    return "assessment.completed", {
        "id": activity_id,
        "contact": contact["id"],
        "email": contact["email"],
        "external_id": contact["external_id"],
        "occurred_at": event.occurred_at.isoformat(),
        "persona": properties.pop("persona", None),
        "assessment": properties,
    }


def consultation_requested(event: Event, contact: dict[str, Any], activity_id: int) -> tuple[str, dict[str, Any]]:
    """consultation.requested for webhooks (issue 5; seed 004's "consultation submitted"
    trigger). Who asked, and when, travel as plain fields; the consultation itself (specialty,
    reason, preferred time: medical) only under `consultation`, a medical field the PHI guard
    drops unless an endpoint is allowed it."""
    return "consultation.requested", {
        "id": activity_id,
        "contact": contact["id"],
        "email": contact["email"],
        "external_id": contact["external_id"],
        "occurred_at": event.occurred_at.isoformat(),
        "consultation": dict(event.properties),
    }


def on_account_created(event: Event, actor: Actor, contact: Contact | None) -> dict:
    fields = {k: event.properties[k] for k in _PROFILE_FIELDS if k in event.properties}
    if not contact.source:  # where the person came from (a lead capture before the sign-up) stays
        fields["source"] = "app"
    contact, stale = _sync(event, actor, **fields)
    return _timeline(event, actor, contact, stale)


# The timeline types' properties (integrations/properties.py): the names the CRM knows, each
# optional; others are kept as sent. Seed 002 names the food log's and the goal's.
_CLIENT = {"platform": text(40), "app_version": text(40), "device": text(100)}
_GRAMS = number(0, 5_000)
FOOD_LOGGED = Properties(
    food_name=text(200),
    name=text(200),
    meal=text(50),
    calories=number(0, 20_000),
    protein=_GRAMS,
    carbs=_GRAMS,
    fat=_GRAMS,
    fiber=_GRAMS,
    sugar=_GRAMS,
    serving=text(100),
    quantity=number(0, 100_000),
    date=date(),
)
GOAL_PROGRESS = Properties(
    goal_id=identifier(),
    goal_type=choice("weight", "nutrition", "activity", "water", "sleep"),
    goal_value=number(0, 10_000_000),
    goal_unit=text(20),
    target_date=date(),
    priority=choice("low", "medium", "high"),
    progress_pct=number(0, 100),
    status=text(20),
    streak_days=integer(0, 100_000),
    date=date(),
)
_URL = text(2048)
PAGE_VIEWED = Properties(
    path=_URL,
    url=_URL,
    referrer=_URL,
    title=text(300),
    **{f"utm_{part}": text(200) for part in ("source", "medium", "campaign", "term", "content")},
)
_PRESCRIPTION = {"prescription_id": identifier(), "medication": text(200)}

EVENT_TYPES: dict[str, EventType] = {
    "account_created": EventType(
        Serialized(ProfileSchema), on_account_created, creates_user=True, lifts_suppression=True
    ),
    "onboarding_completed": EventType(
        Properties(steps_completed=integer(0, 10_000), duration_seconds=number(0, 1e7), **_CLIENT),
        contact_fields=onboarding_done,
    ),
    "user_logged_in": EventType(Properties(method=text(40), **_CLIENT), contact_fields=logged_in),
    "profile_updated": EventType(Serialized(ProfileSchema), on_profile, creates_user=True),
    "food_logged": EventType(FOOD_LOGGED),
    "goal_progress": EventType(GOAL_PROGRESS),
    "order_placed": EventType(Serialized(OrderSchema), on_order_placed),
    "subscription_started": EventType(Serialized(SubscriptionStartedSchema), on_subscription_started),
    "subscription_cancelled": EventType(Serialized(SubscriptionSchema), on_subscription_cancelled),
    "consultation_submitted": EventType(
        Properties(consultation_id=identifier(), specialty=text(100), reason=text(2000), preferred_at=moment()),
        announces=consultation_requested,
    ),
    "treatment_plan_updated": EventType(Properties(plan_id=identifier(), plan=text(200), status=text(40))),
    "prescription_approved": EventType(Properties(approved_at=moment(), **_PRESCRIPTION)),
    "refill_due": EventType(Properties(due_date=date(), **_PRESCRIPTION), user_acted=False),
    "renewal_approaching": EventType(
        Properties(
            subscription_id=identifier(), plan=text(100), renews_at=date(), amount=number(0, 1e9), currency=text(3)
        ),
        user_acted=False,
    ),
    "support_ticket_created": EventType(Serialized(TicketSchema), on_ticket),
    "referral_made": EventType(
        Properties(referred_email=email(), referral_code=text(64), channel=text(40)),
        other_people=(("referred_email", EMAIL),),
    ),
    "review_left": EventType(Properties(rating=number(1, 5), title=text(200), body=text(20_000), platform=text(40))),
    "assessment_completed": EventType(
        Properties(
            assessment_id=identifier(),
            assessmentType=text(100),
            persona=text(100),
            readinessScore=number(0, 100),
            score=number(-1e9, 1e9),
            answers=structured(),
            assessment=mapping(),
        ),
        creates_user=True,
        announces=assessment_completed,
    ),
    "lead_captured": EventType(Serialized(LeadSchema), on_lead_captured, creates_user=True),
    "page_viewed": EventType(PAGE_VIEWED, creates_user=True),
    "custom": EventType(Properties(name=text(100), tags=listing(50))),
}


# ----------------------------------------------------------------------------- the envelope


class UserRef(serializers.Serializer):
    external_id = serializers.CharField(max_length=128, required=False)
    email = serializers.EmailField(required=False)

    def validate(self, data):
        if not data.get("external_id") and not data.get("email"):
            raise serializers.ValidationError("Name the user by external_id and/or email.")
        return data


class EventInput(serializers.Serializer):
    type = serializers.ChoiceField(choices=sorted(EVENT_TYPES))
    occurred_at = serializers.DateTimeField(required=False)
    user = UserRef()
    properties = serializers.DictField(required=False, default=dict)
    source = serializers.ChoiceField(choices=["app", "crm", "marketing"], required=False, default="app")


EVENT_SOURCES = frozenset(EventInput().fields["source"].choices)
APP_SOURCE = "app"
OTHER_SOURCE_REFUSED = (
    'Only a key with the scope "events:sources" may send events as source "{source}" (an outside CRM or '
    "marketing tool, which the conflict policy ranks above the app on some fields)."
)
_USER_KEYS = frozenset({"external_id", "email"})


FUTURE = "occurred_at is more than {seconds} s ahead of our clock."
OUT_OF_RANGE = "A moment between the years 1 and 9999 in UTC."


def event_parse(data: Any, *, received_at: dt.datetime | None = None) -> Event:
    """The envelope and the type's own schema; ValidationError (field paths) on any problem.
    An event without occurred_at happened when it was received (`received_at`, default now).

    A well-formed envelope is read by hand (a batch has a thousand of them, and the applier
    reads each again; the serializer takes ~0.3 ms each); anything unusual goes through
    EventInput, which has the last word and words the errors. Emails are normalized as
    contacts stores them."""
    event = _event_fast(data, received_at)
    if event is None:
        envelope = EventInput(data=data)
        if not envelope.is_valid():
            raise ValidationError(flat_errors(envelope.errors))
        values = envelope.validated_data
        event = _event(
            values["type"],
            values.get("occurred_at") or received_at,
            values["user"],
            values.get("properties") or {},
            values.get("source", "app"),
        )
    try:  # as PostgreSQL keeps it; "0001-01-01T00:00:00+14:00" is 1 BC there, which no read gives back
        event = event._replace(occurred_at=event.occurred_at.astimezone(dt.UTC))
    except OverflowError:
        raise ValidationError({"occurred_at": [OUT_OF_RANGE]}) from None
    ahead = event.occurred_at - timezone.now()
    if ahead.total_seconds() > settings.EVENT_FUTURE_TOLERANCE_SECONDS:
        raise ValidationError({"occurred_at": [FUTURE.format(seconds=settings.EVENT_FUTURE_TOLERANCE_SECONDS)]})
    event_type = EVENT_TYPES[event.type]
    properties = event_type.schema.validate(event.properties)
    return event._replace(
        properties=_pseudonymised(properties, event_type.other_people) if event_type.other_people else properties
    )


def _pseudonymised(properties: dict[str, Any], other_people: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The properties with each one naming another person (a referred friend's email) replaced
    by `<name>_digest`, the keyed hash compliance keeps of an email or phone (as the
    suppression list does). The event lands on its user's timeline and in the user's export,
    where erasing that other person would not find the address without scanning every
    timeline; the hash still tells whether a later contact is the one named. Done at the door,
    so the inbox never stores the address either; a stored event parsed again (the applier)
    has nothing left to replace."""
    properties = dict(properties)
    for name, kind in other_people:
        value = properties.pop(name, None)
        if isinstance(value, str) and value.strip():
            properties[f"{name}_digest"] = identifier_digest(kind, value)
    return properties


def _event(kind: str, occurred_at, user: dict, properties: dict, source: str) -> Event:
    """An Event of checked parts: its own copies of the dicts, empty identifiers left out."""
    user = {name: value for name, value in user.items() if value}
    if "email" in user:
        user["email"] = contacts.normalize_email(user["email"])
    return Event(kind, occurred_at or timezone.now(), user, dict(properties), source)


def _event_fast(data: Any, received_at: dt.datetime | None) -> Event | None:
    """The Event (its type's schema not checked yet) for the plain shapes, or None to let
    EventInput decide."""
    if not isinstance(data, dict):
        return None
    kind, user, properties = data.get("type"), data.get("user"), data.get("properties", {})
    source, occurred_at = data.get("source", "app"), data.get("occurred_at")
    if not (isinstance(kind, str) and isinstance(source, str) and isinstance(properties, dict)):
        return None
    if kind not in EVENT_TYPES or source not in EVENT_SOURCES:
        return None
    if not isinstance(user, dict) or not user.keys() <= _USER_KEYS:
        return None
    external_id, email = user.get("external_id"), user.get("email")
    if external_id is None and email is None:
        return None
    for value, limit in ((external_id, 128), (email, 254)):
        if value is not None and (
            not isinstance(value, str) or not value or value.strip() != value or len(value) > limit
        ):
            return None
    if email is not None:
        try:
            validate_email(email)
        except ValidationError:
            return None
    if occurred_at is not None:
        try:
            occurred_at = parse_datetime(occurred_at) if isinstance(occurred_at, str) else None
        except ValueError:  # well formed, but no such date ("2024-02-30T00:00:00Z")
            return None
        if occurred_at is None or occurred_at.tzinfo is None:
            return None  # naive times take the serializer's time zone rule
    elif "occurred_at" in data:
        return None
    return _event(kind, occurred_at or received_at, user, properties, source)


def events_ingest(*, events: list[Event], actor: Actor) -> list[Outcome]:
    """Apply events in order, in the caller's transaction: one Outcome each (accepted with its
    result, or rejected with a ValidationError or ConflictError; a rejected event writes
    nothing and does not stop the others). Timeline types go many at a time (one statement per
    step, see integrations.inbound_timeline); a type with a handler runs alone, under a
    savepoint, after the timeline events before it, so each event sees what the events before
    it did. One SyncEvent per event records how it ended."""
    outcomes: list[Outcome] = []
    # No savepoint of our own: an error here is the caller's to roll back.
    with transaction.atomic(savepoint=False):
        segment: list[int] = []
        for index, event in enumerate(events):
            if EVENT_TYPES[event.type].handler is None:
                segment.append(index)
                continue
            # A handler sees (and may create) contacts as the events before it left them.
            outcomes += _timeline_segment(events, segment, actor)
            segment = []
            try:
                with transaction.atomic():
                    outcomes.append(Outcome.accepted(_ingest_one(event, actor)))
            except (ValidationError, ConflictError) as exc:
                outcomes.append(Outcome.rejected(exc))
        outcomes += _timeline_segment(events, segment, actor)
        sync.sync_events_record_many([_sync_row(e, o) for e, o in zip(events, outcomes, strict=True)])
    return outcomes


def _timeline_segment(events: list[Event], indices: list[int], actor: Actor) -> list[Outcome]:
    """Consecutive timeline events, many at a time; their outcomes in order."""
    if not indices:
        return []
    batch = TimelineBatch(
        events=[events[i] for i in indices],
        actor=actor,
        contact_fields=_contact_fields,
        creates_user=lambda e: EVENT_TYPES[e.type].creates_user,
        announcement=_announcement,
        user_acted=lambda e: EVENT_TYPES[e.type].user_acted,
    )
    outcomes = batch.run()
    return [outcomes[n] for n in range(len(indices))]


def _announcement(event: Event, contact: dict[str, Any], activity_id: int) -> tuple[str, dict] | None:
    announce = EVENT_TYPES[event.type].announces
    return announce(event, contact, activity_id) if announce is not None else None


def _contact_fields(event: Event) -> dict[str, Any] | None:
    fields = EVENT_TYPES[event.type].contact_fields
    return fields(event) if fields is not None else None


def _ingest_one(event: Event, actor: Actor) -> dict[str, Any]:
    """A type with a handler: find (or, when the type may, create) the contact, then the handler."""
    event_type = EVENT_TYPES[event.type]
    if event_type.lifts_suppression:
        suppression_lift(
            actor=actor,
            reason=event.type,
            email=event.user.get("email"),
            phone=event.properties.get("phone"),
            external_id=event.user.get("external_id"),
        )
    contact = contacts.contact_find(email=event.user.get("email"), external_id=event.user.get("external_id"))
    if contact is None and not event_type.creates_user:
        raise ValidationError({"user": [UNKNOWN_USER]})
    if contact is None:
        contact, _ = _sync(event, actor)
    return event_type.handler(event, actor, contact)


def _sync_row(event: Event, outcome: Outcome) -> sync.SyncRow:
    if outcome.status == "accepted":
        return sync.inbound_event_row(event, status=sync.result_status(outcome.result), result=outcome.result)
    return sync.inbound_event_row(event, status="failed", error=sync.error_summary(outcome.error))


def event_refusals_record(refusals: list[tuple[Event, ValidationError | ConflictError]]) -> None:
    """Failed SyncEvents for events refused at the door (unknown user, identity conflict), in
    their own transaction, so the sync log shows what was turned away."""
    if refusals:
        with transaction.atomic():
            sync.sync_events_record_many([_sync_row(event, Outcome.rejected(error)) for event, error in refusals])


def outcome_errors(exc: ValidationError | ConflictError) -> dict[str, list[str]]:
    """A refusal's errors as field -> messages."""
    if isinstance(exc, ConflictError):
        return exc.fields or {"non_field_errors": [exc.message]}
    return exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}


def timeline_pseudonymise(
    *, actor: Actor, batch_size: int = 1000, progress: Callable[[int], None] | None = None
) -> int:
    """Rewrite the timeline entries written before their type declared `other_people` (a
    referral's friend's email kept as sent): each such property becomes its keyed hash, as
    event_parse now does at the door. Returns the entries rewritten; idempotent (a rewritten
    entry no longer matches). Batches of `batch_size`, each in its own transaction with its
    audit row (counts only); found through activity_type_window (the type). `progress` is
    called with the running total after each batch."""
    done = 0
    for name, event_type in EVENT_TYPES.items():
        if not event_type.other_people:
            continue
        keys = [key for key, _ in event_type.other_people]
        while True:
            with transaction.atomic():
                rows = list(
                    Activity.objects.filter(type=name, properties__has_any_keys=keys)
                    .order_by("pk")
                    .only("pk", "properties")[:batch_size]
                )
                if not rows:
                    break
                for row in rows:
                    row.properties = _pseudonymised(row.properties, event_type.other_people)
                Activity.objects.bulk_update(rows, ["properties"])
                audit_record(
                    actor=actor,
                    action="activity.pseudonymise",
                    object_type="contacts.activity",
                    changes={"type": name, "rows": len(rows)},
                )
            done += len(rows)
            if progress is not None:
                progress(done)
    return done
