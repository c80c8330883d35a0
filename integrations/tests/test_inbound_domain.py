"""What each inbound event type does to the CRM, as a health company expects it (issue 5, seeds 002
and 004): the lifecycle moves it causes and the ones it must not, what outside systems hear of
it, seed 002's pairs, and events that arrive out of order or twice. Every test goes through the
HTTP routes and the inbox applier."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from contacts.models import Activity, Contact, LifecycleTransition, Order, Subscription, Ticket
from contacts.tests.factories import ContactFactory
from crm_platform.models import OutboxMessage
from integrations import relay
from integrations.models import InboundEvent
from integrations.tasks import inbox_apply
from integrations.tests.conftest import verified_by_secret

pytestmark = pytest.mark.django_db
EVENTS = "/api/v1/events"
BATCH = "/api/v1/events/batch"
APP_EVENT = "/api/crm/webhooks/app-event"


def send(client, url, body, key, apply=True):
    response = client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 202, response.content
    if apply:
        inbox_apply()
    return response


def state(key: str) -> InboundEvent:
    return InboundEvent.objects.get(key=key)


@pytest.mark.parametrize(
    "kind,properties",
    [
        ("refill_due", {"prescription_id": "rx-1", "due_date": "2026-12-01"}),
        ("renewal_approaching", {"subscription_id": "s-1", "renews_at": "2026-12-01"}),
    ],
)
def test_a_reminder_the_platform_schedules_neither_wins_back_nor_marks_active_a_churned_patient(app, kind, properties):
    """refill_due and renewal_approaching are the platform's own reminders (seed 004's automation
    triggers), not something the patient did: they land on the timeline, but a churned patient
    stays churned (Won-Back is re-engagement) and last_active_at, which churn reads, stays put."""
    long_ago = timezone.now() - dt.timedelta(days=200)
    contact = ContactFactory(email=None, external_id="u-1", lifecycle_stage="churned", last_active_at=long_ago)
    send(app, EVENTS, {"type": kind, "user": {"external_id": "u-1"}, "properties": properties}, key="r")
    assert state("r").status == "applied", state("r").result
    contact.refresh_from_db()
    assert Activity.objects.filter(contact=contact, type=kind).count() == 1
    assert contact.lifecycle_stage == "churned"
    assert contact.last_active_at == long_ago


def test_a_login_still_wins_back_a_churned_patient(app):
    """The counterpart: what the patient does (any activity) is re-engagement."""
    ContactFactory(email=None, external_id="u-1", lifecycle_stage="churned")
    send(app, EVENTS, {"type": "user_logged_in", "user": {"external_id": "u-1"}}, key="l")
    assert Contact.objects.get(external_id="u-1").lifecycle_stage == "won_back"


def test_consultation_submitted_announces_consultation_requested_without_its_medical_details(
    app, make_endpoint, receiver
):
    """Issue 5 lists consultation.requested among the webhook event types and seed 004 makes
    "Consultation submitted" an automation trigger: the event announces it. Who and when travel
    as plain fields; the consultation itself (specialty, reason: medical) only under
    `consultation`, which reaches only an endpoint allowed it."""
    _, plain_secret = make_endpoint(event_types=["consultation_requested"])  # seed 003's name
    _, allowed_secret = make_endpoint(
        event_types=["consultation.requested"], may_receive_phi=True, phi_fields=["consultation", "reason"]
    )
    contact = ContactFactory(email="ann@example.com", external_id="u-1")
    body = {
        "type": "consultation_submitted",
        "user": {"external_id": "u-1"},
        "occurred_at": "2026-01-05T10:00:00Z",
        "properties": {"consultation_id": "c-7", "specialty": "endocrinology", "reason": "thyroid, weight gain"},
    }
    send(app, EVENTS, body, key="c")
    assert state("c").status == "applied", state("c").result
    message = OutboxMessage.objects.get(topic="consultation.requested")
    assert "thyroid" not in str(message.payload)  # sealed at rest, as every medical field
    relay.outbox_relay(budget_seconds=10)
    by_secret = verified_by_secret(receiver.requests, plain_secret, allowed_secret)
    plain, rich = by_secret[plain_secret], by_secret[allowed_secret]
    assert plain["type"] == rich["type"] == "consultation.requested"
    activity = Activity.objects.get(type="consultation_submitted")
    assert plain["data"] == {
        "id": activity.pk,
        "contact": contact.pk,
        "email": "ann@example.com",
        "external_id": "u-1",
        "occurred_at": "2026-01-05T10:00:00+00:00",
    }
    assert rich["data"]["consultation"] == body["properties"]


def test_seed_002_order_and_subscription_pairs_name_their_object_by_external_id(app):
    """Seed 002's body names the app's object by `externalId`; order/create, subscription/create
    and subscription/delete take it as the order's or subscription's id when the payload has none."""
    ContactFactory(email=None, external_id="user_123", lifecycle_stage="patient")
    order = {
        "entityType": "order",
        "operation": "create",
        "userId": "user_123",
        "externalId": "ord_1",
        "payload": {"amount": 49.5, "currency": "USD", "timestamp": 1767225600},
    }
    response = app.post(APP_EVENT, order, format="json", HTTP_IDEMPOTENCY_KEY="order:ord_1:create")
    assert response.status_code == 202, response.content
    started = {**order, "entityType": "subscription", "externalId": "sub_1", "payload": {"plan": "monthly"}}
    send(app, APP_EVENT, started, key="subscription:sub_1:create")
    cancelled = {**started, "operation": "delete", "payload": {}}
    send(app, APP_EVENT, cancelled, key="subscription:sub_1:delete")
    assert Order.objects.get(external_id="ord_1").amount == 49.5
    assert Subscription.objects.get(external_id="sub_1").status == "cancelled"
    assert all(row.status == "applied" for row in InboundEvent.objects.all())


def test_an_account_created_after_a_lead_capture_keeps_where_the_person_came_from(app):
    """The sign-up often follows the capture (an assessment on the website, then the app): the
    contact's acquisition source stays the capture's; "app" is only for someone new."""
    t0 = timezone.now() - dt.timedelta(hours=1)
    lead = {
        "type": "lead_captured",
        "occurred_at": t0.isoformat(),
        "user": {"email": "ann@example.com"},
        "properties": {"source": "assessment"},
    }
    send(app, EVENTS, lead, key="lead")
    assert Contact.objects.get(email="ann@example.com").source == "assessment"
    signup = {"type": "account_created", "user": {"email": "ann@example.com", "external_id": "u-1"}}
    send(app, EVENTS, signup, key="signup")
    assert state("signup").status == "applied", state("signup").result
    contact = Contact.objects.get(email="ann@example.com")
    assert contact.external_id == "u-1" and contact.source == "assessment"


def test_order_and_subscription_lifecycle_moves_are_dated_when_the_event_happened(app):
    """The funnel's reports read LifecycleTransition.occurred_at: an order paid yesterday, sent
    today, moved the patient yesterday (as the timeline types' moves are dated)."""
    ContactFactory(email=None, external_id="u-1", lifecycle_stage="patient")
    paid = (timezone.now() - dt.timedelta(days=1)).replace(microsecond=0)
    order = {"order_id": "o-1", "amount": "30.00"}
    send(
        app,
        EVENTS,
        {"type": "order_placed", "occurred_at": paid.isoformat(), "user": {"external_id": "u-1"}, "properties": order},
        key="o",
    )
    started = paid + dt.timedelta(hours=2)
    subscription = {"subscription_id": "s-1", "plan": "monthly"}
    send(
        app,
        EVENTS,
        {
            "type": "subscription_started",
            "occurred_at": started.isoformat(),
            "user": {"external_id": "u-1"},
            "properties": subscription,
        },
        key="s",
    )
    moves = dict(LifecycleTransition.objects.values_list("to_stage", "occurred_at"))
    assert moves == {"active_customer": paid, "subscriber": started}


def test_an_order_resent_with_another_amount_fails_visibly_instead_of_being_applied_unchanged(app):
    """The same order id again with a different amount (a correction, or a bug in the sender) is
    not the order we have: the event fails with a conflict the sender and staff can see, instead
    of reading "applied" while the CRM keeps the first amount."""
    ContactFactory(email=None, external_id="u-1")
    first = {"type": "order_placed", "user": {"external_id": "u-1"}, "properties": {"order_id": "o-1", "amount": "30"}}
    send(app, EVENTS, first, key="o1")
    again = {**first, "properties": {"order_id": "o-1", "amount": "300"}}
    send(app, EVENTS, again, key="o2")
    assert Order.objects.get(external_id="o-1").amount == 30
    row = state("o2")
    assert row.status == "failed" and "properties.order_id" in row.result["errors"], row.result
    same = {**first, "properties": {"order_id": "o-1", "amount": "30.00"}}
    send(app, EVENTS, same, key="o3")  # the same order sent again under another key: applied, nothing new
    assert state("o3").status == "applied" and Order.objects.count() == 1


def test_a_cancellation_that_arrives_before_its_start_leaves_the_subscription_cancelled(app):
    """Out of order (two requests, a retry): subscription_cancelled is applied before
    subscription_started for the same subscription. The patient cancelled; the CRM must not end
    with an active subscription (renewal and refill campaigns, churn, revenue all read it)."""
    ContactFactory(email=None, external_id="u-1", lifecycle_stage="active_customer")
    t0 = timezone.now() - dt.timedelta(hours=2)
    cancel = {
        "type": "subscription_cancelled",
        "occurred_at": (t0 + dt.timedelta(hours=1)).isoformat(),
        "user": {"external_id": "u-1"},
        "properties": {"subscription_id": "s-1"},
    }
    start = {
        "type": "subscription_started",
        "occurred_at": t0.isoformat(),
        "user": {"external_id": "u-1"},
        "properties": {"subscription_id": "s-1", "plan": "monthly"},
    }
    send(app, EVENTS, cancel, key="cancel")
    send(app, EVENTS, start, key="start")
    subscription = Subscription.objects.get(external_id="s-1")
    assert (subscription.status, subscription.plan) == ("cancelled", "monthly")
    assert subscription.started_at == t0 and subscription.cancelled_at == t0 + dt.timedelta(hours=1)
    assert Contact.objects.get(external_id="u-1").lifecycle_stage == "active_customer"  # never a Subscriber


def test_a_subscription_started_again_with_another_plan_fails_visibly_instead_of_being_applied_unchanged(app):
    """As for orders: the same subscription id started again with another plan (or amount, or
    currency) is not the subscription we have. It answered "applied" while the CRM kept the
    first plan; it now fails naming what differs. The same start again is applied, nothing new."""
    ContactFactory(email=None, external_id="u-1")
    first = {
        "type": "subscription_started",
        "user": {"external_id": "u-1"},
        "properties": {"subscription_id": "s-1", "plan": "monthly", "amount": "30", "currency": "usd"},
    }
    send(app, EVENTS, first, key="s1")
    assert state("s1").status == "applied", state("s1").result
    other_plan = {**first, "properties": {**first["properties"], "plan": "annual"}}
    send(app, EVENTS, other_plan, key="s2")
    row = state("s2")
    assert row.status == "failed", row.result
    assert row.result["errors"]["properties.subscription_id"] == [
        "This subscription was recorded with another plan; it is not applied again."
    ]
    other_price = {**first, "properties": {"subscription_id": "s-1", "plan": "monthly", "amount": "300"}}
    send(app, EVENTS, other_price, key="s3")
    assert "another amount; " in state("s3").result["errors"]["properties.subscription_id"][0]
    subscription = Subscription.objects.get(external_id="s-1")
    assert (subscription.plan, subscription.amount, subscription.currency) == ("monthly", 30, "USD")
    same = {**first, "properties": {**first["properties"], "amount": "30.00", "currency": "USD"}}
    send(app, EVENTS, same, key="s4")  # the same start under another key: applied, nothing new
    assert state("s4").status == "applied", state("s4").result
    assert Subscription.objects.count() == 1


def test_a_cancellation_naming_its_plan_before_its_start_is_filled_in_by_the_start(app):
    """Out of order, the cancellation naming the plan: the start arriving later is the same
    subscription, not another one. It fills in the amount, currency and start (they were left
    at 0 USD and the cancellation's time) and is applied; after that, a start with another
    amount fails as for any started subscription."""
    ContactFactory(email=None, external_id="u-1")
    t0 = timezone.now() - dt.timedelta(hours=2)
    cancel = {
        "type": "subscription_cancelled",
        "occurred_at": (t0 + dt.timedelta(hours=1)).isoformat(),
        "user": {"external_id": "u-1"},
        "properties": {"subscription_id": "s-1", "plan": "monthly"},
    }
    start = {
        "type": "subscription_started",
        "occurred_at": t0.isoformat(),
        "user": {"external_id": "u-1"},
        "properties": {"subscription_id": "s-1", "plan": "monthly", "amount": "49.50", "currency": "EUR"},
    }
    send(app, EVENTS, cancel, key="cancel")
    send(app, EVENTS, start, key="start")
    assert state("start").status == "applied", state("start").result
    subscription = Subscription.objects.get(external_id="s-1")
    assert (subscription.status, subscription.plan, subscription.amount, subscription.currency) == (
        "cancelled",
        "monthly",
        Decimal("49.50"),
        "EUR",
    )
    assert subscription.started_at == t0 and subscription.cancelled_at == t0 + dt.timedelta(hours=1)
    again = {**start, "properties": {**start["properties"], "amount": "60"}}
    send(app, EVENTS, again, key="again")
    assert state("again").status == "failed", state("again").result
    assert Subscription.objects.get(external_id="s-1").amount == Decimal("49.50")


def test_a_support_ticket_sent_twice_under_its_ticket_id_is_one_ticket(app):
    """support_ticket_created had no dedupe id: the same ticket sent under two Idempotency-Keys
    (or batch event ids) opened two tickets. With the app's `ticket_id` the second is applied
    and names the first's ticket; another subject or body under that id fails, as a resent
    order with another amount does; another person's ticket with the same id is theirs."""
    ContactFactory(email=None, external_id="u-1")
    ContactFactory(email=None, external_id="u-2")
    ticket = {
        "type": "support_ticket_created",
        "user": {"external_id": "u-1"},
        "properties": {"ticket_id": "t-1", "subject": "Refund", "body": "Charged twice", "priority": "high"},
    }
    send(app, EVENTS, ticket, key="t1")
    response = app.post(BATCH, {"events": [{"id": "t1-again", **ticket}]}, format="json")
    assert response.json()["accepted"] == 1, response.content
    inbox_apply()
    first, again = state("t1"), state("event:t1-again")
    assert first.status == again.status == "applied", again.result
    assert again.result["ticket"] == first.result["ticket"] and Ticket.objects.count() == 1
    assert Ticket.objects.get().external_id == "t-1"

    changed = {**ticket, "properties": {**ticket["properties"], "body": "Charged three times"}}
    send(app, EVENTS, changed, key="t1-changed")
    assert state("t1-changed").status == "failed"
    assert state("t1-changed").result["errors"]["properties.ticket_id"] == [
        "This ticket was recorded with another body; it is not applied again."
    ]
    assert Ticket.objects.get().body == "Charged twice"

    theirs = {**ticket, "user": {"external_id": "u-2"}}
    send(app, EVENTS, theirs, key="t1-u2")
    assert state("t1-u2").status == "applied" and Ticket.objects.filter(external_id="t-1").count() == 2


def test_a_support_ticket_without_a_ticket_id_is_a_new_ticket_each_time(app):
    """Without the app's id nothing tells a resend from a second ticket: as before, each is one."""
    ContactFactory(email=None, external_id="u-1")
    ticket = {"type": "support_ticket_created", "user": {"external_id": "u-1"}, "properties": {"subject": "Help"}}
    send(app, EVENTS, ticket, key="a")
    send(app, EVENTS, ticket, key="b")
    assert state("a").status == state("b").status == "applied"
    assert Ticket.objects.count() == 2 and not Ticket.objects.filter(external_id__isnull=False).exists()


def test_seed_002_ticket_create_names_its_ticket_by_external_id(app):
    """Seed 002's ticket/create names the app's ticket by `externalId`, as its order and
    subscription pairs do: the same ticket sent again under another key is the same ticket."""
    ContactFactory(email=None, external_id="user_123")
    body = {
        "entityType": "ticket",
        "operation": "create",
        "userId": "user_123",
        "externalId": "tkt_1",
        "payload": {"subject": "Cannot log in"},
    }
    send(app, APP_EVENT, body, key="ticket:tkt_1:create")
    send(app, APP_EVENT, body, key="ticket:tkt_1:create:retry")
    assert all(row.status == "applied" for row in InboundEvent.objects.all())
    assert list(Ticket.objects.values_list("external_id", "subject")) == [("tkt_1", "Cannot log in")]


@pytest.mark.parametrize("kind", ["referral_made", "review_left"])
def test_a_referral_or_review_from_someone_who_never_bought_does_not_make_them_an_advocate(app, kind):
    """Seed 004: Advocate is the VIP customer, the end of the advocacy funnel (Subscriber ->
    Advocate). A lead who refers a friend or rates the app is still a lead."""
    ContactFactory(email=None, external_id="u-1", lifecycle_stage="lead")
    send(app, EVENTS, {"type": kind, "user": {"external_id": "u-1"}, "properties": {}}, key="a")
    assert Contact.objects.get(external_id="u-1").lifecycle_stage == "lead"
