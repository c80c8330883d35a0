"""Review findings on the lifecycle sweep, orders and subscriptions, through their real entry
points (the Celery task, the API)."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from contacts.lifecycle import Stage
from contacts.models import Contact, Note, Order, Subscription, Ticket
from contacts.tasks import lifecycle_sweep
from contacts.tests.factories import ContactFactory
from leads.tasks import clv_recompute_all

pytestmark = pytest.mark.django_db


def _long_ago(days=200):
    return timezone.now() - dt.timedelta(days=days)


# ----------------------------------------------------------------------------- the sweep


def test_the_sweep_does_not_churn_a_subscriber_whose_subscription_is_active(writer):
    """A paying subscriber who has not opened the app for months has not churned: their
    subscription is active and renews. The sweep marks them Churned all the same."""
    contact = ContactFactory(lifecycle_stage=Stage.ACTIVE_CUSTOMER, created_at=_long_ago(), last_active_at=_long_ago())
    response = writer.post(
        "/api/v1/subscriptions",
        {"contact": contact.pk, "plan": "monthly", "started_at": _long_ago(150).isoformat()},
        format="json",
    )
    assert response.status_code == 201, response.content
    contact.refresh_from_db()
    assert contact.lifecycle_stage == Stage.SUBSCRIBER

    lifecycle_sweep.apply().get()

    contact.refresh_from_db()
    assert Subscription.objects.get(contact=contact).status == Subscription.Status.ACTIVE
    assert contact.lifecycle_stage == Stage.SUBSCRIBER


def test_the_sweep_does_not_churn_a_customer_who_paid_an_order_last_week(writer):
    """A paid order is the strongest sign of life there is; recording one through the API does
    not count as activity, and the sweep churns a customer who paid a week ago."""
    contact = ContactFactory(lifecycle_stage=Stage.PATIENT, created_at=_long_ago(), last_active_at=_long_ago())
    paid_at = timezone.now() - dt.timedelta(days=7)
    response = writer.post(
        "/api/v1/orders",
        {"contact": contact.pk, "amount": "80.00", "paid_at": paid_at.isoformat()},
        format="json",
    )
    assert response.status_code == 201, response.content
    contact.refresh_from_db()
    assert contact.lifecycle_stage == Stage.ACTIVE_CUSTOMER

    lifecycle_sweep.apply().get()

    contact.refresh_from_db()
    assert contact.lifecycle_stage == Stage.ACTIVE_CUSTOMER


# ----------------------------------------------------------------------------- merged contacts


def test_an_order_for_a_merged_away_contact_lands_on_the_survivor(client_with_merge, writer):
    """After a merge the loser is an archived pointer. An order the app still sends under the
    loser's id is recorded on the archived loser: the survivor's CLV misses it, and the loser
    (hidden from every list) turns Active Customer and gets a CLV of its own."""
    survivor = ContactFactory(lifecycle_stage=Stage.PATIENT)
    loser = ContactFactory(lifecycle_stage=Stage.PATIENT)
    client_with_merge(survivor, loser)

    response = writer.post("/api/v1/orders", {"contact": loser.pk, "amount": "120.00"}, format="json")
    assert response.status_code in (201, 400, 409), response.content
    clv_recompute_all.apply().get()

    loser.refresh_from_db()
    survivor.refresh_from_db()
    assert loser.clv == 0 and not Order.objects.filter(contact=loser).exists()
    assert loser.lifecycle_stage == Stage.PATIENT  # the archived pointer is left alone
    if response.status_code == 201:  # accepted: then it is the survivor's
        assert Order.objects.filter(contact=survivor).count() == 1
        assert survivor.clv > 0


def test_notes_and_tickets_for_a_merged_away_contact_land_on_the_survivor(client_with_merge, key_client):
    """The archived loser is hidden from every list: a note or ticket filed under its stale id
    would be out of sight of the staff working the survivor."""
    survivor, loser = ContactFactory(), ContactFactory()
    client_with_merge(survivor, loser)
    writer = key_client(["contacts:write", "tickets:write"])
    note = writer.post("/api/v1/notes", {"contact": loser.pk, "body": "called back"}, format="json")
    ticket = writer.post("/api/v1/tickets", {"contact": loser.pk, "subject": "refund"}, format="json")
    assert note.status_code == ticket.status_code == 201, (note.content, ticket.content)
    assert note.json()["contact"] == ticket.json()["contact"] == survivor.pk
    assert not Note.objects.filter(contact=loser).exists() and not Ticket.objects.filter(contact=loser).exists()


# ----------------------------------------------------------------------------- subscriptions


def test_a_subscription_external_id_of_another_contact_is_409_not_their_subscription(writer, key_client):
    """Orders refuse an external id that belongs to another contact (409); subscriptions answer
    200 with the other person's subscription, plan included for a phi:read key."""
    alice, bob = ContactFactory(), ContactFactory()
    first = writer.post(
        "/api/v1/subscriptions", {"contact": alice.pk, "plan": "weight-loss", "external_id": "s-1"}, format="json"
    )
    assert first.status_code == 201
    again = writer.post(
        "/api/v1/subscriptions", {"contact": bob.pk, "plan": "monthly", "external_id": "s-1"}, format="json"
    )
    assert again.status_code == 409, again.content
    assert Subscription.objects.get(external_id="s-1").contact_id == alice.pk


def test_a_subscription_in_a_currency_that_is_no_code_is_400(writer):
    """Orders and deals check the currency (three ASCII letters); subscriptions store "1$%"."""
    contact = ContactFactory()
    response = writer.post(
        "/api/v1/subscriptions", {"contact": contact.pk, "plan": "monthly", "currency": "1$%"}, format="json"
    )
    assert response.status_code == 400, response.content
    assert set(response.json()["error"]["fields"]) == {"currency"}
    assert not Subscription.objects.exists()


@pytest.fixture
def client_with_merge(key_client):
    merger = key_client(["contacts:read", "contacts:write"])

    def merge(survivor, loser):
        response = merger.post(f"/api/v1/contacts/{survivor.pk}/merge", {"loser": loser.pk}, format="json")
        assert response.status_code == 200, response.content
        Contact.objects.filter(pk=loser.pk).update(clv=Decimal("0"))

    return merge
