"""Review findings on deals, stage automations and funnels, through the HTTP API."""

import pytest

from contacts.lifecycle import Stage as LifecycleStage
from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from crm_platform.models import OutboxMessage
from leads.services import deal_create

pytestmark = pytest.mark.django_db

DEALS = "/api/v1/deals"


def test_winning_a_deal_brings_a_churned_contact_back(key_client, system_actor):
    """Closed won makes the contact an Active Customer. A Churned contact can only leave
    Churned through Won-Back, so the automation skips them and they stay Churned: a customer
    who just signed reads as lost in every list, funnel and campaign."""
    contact = ContactFactory(lifecycle_stage=LifecycleStage.CHURNED)
    deal = deal_create(actor=system_actor, name="Back again", amount=90, contact=contact)
    response = key_client(["deals:write"]).post(f"{DEALS}/{deal.pk}/move", {"stage": "closedwon"}, format="json")
    assert response.status_code == 200, response.content
    contact.refresh_from_db()
    assert contact.lifecycle_stage == LifecycleStage.ACTIVE_CUSTOMER
    assert list(contact.lifecycle_history.order_by("id").values_list("from_stage", "to_stage")) == [
        ("churned", "won_back"),
        ("won_back", "active_customer"),
    ]


def test_a_deal_won_again_requests_onboarding_once(key_client, system_actor, make_contact):
    """The subscription is keyed by the deal so winning it again does not start a second one;
    the onboarding request is not: a deal reopened and won again onboards the person twice."""
    contact = make_contact("twice@example.com")
    deal = deal_create(actor=system_actor, name="Twice", amount=10, contact=contact, plan="Premium")
    client = key_client(["deals:write"])
    for stage in ("closedwon", "negotiation", "closedwon"):
        response = client.post(f"{DEALS}/{deal.pk}/move", {"stage": stage}, format="json")
        assert response.status_code == 200, response.content
    assert contact.subscriptions.count() == 1
    assert OutboxMessage.objects.filter(topic="onboarding.requested").count() == 1


@pytest.mark.parametrize(
    ("funnel", "start", "beyond"),
    [
        # A patient whose first purchase is a subscription went straight to Subscriber.
        ("purchase", "patient", "subscriber"),
        # A first order before any consultation ("skipping ahead is allowed").
        ("consultation", None, "active_customer"),
    ],
)
def test_a_contact_who_skips_past_the_to_stage_counts_as_converted(
    key_client, make_contact, system_actor, funnel, start, beyond
):
    from contacts.services import lifecycle_transition

    contact = make_contact("skip@example.com")
    if start:
        lifecycle_transition(contact=contact, to_stage=start, reason="t", actor=system_actor)
    lifecycle_transition(contact=Contact.objects.get(pk=contact.pk), to_stage=beyond, reason="t", actor=system_actor)
    data = key_client(["leads:read"]).get(f"/api/v1/funnels/{funnel}").json()
    assert (data["entered"], data["converted"]) == (1, 1), data


def test_a_deal_for_a_merged_away_contact_acts_on_the_survivor(key_client, system_actor):
    """A deal opened under a merged-away contact's id (a stale id in another system) belongs to
    the archived loser: winning it moves the hidden loser to Active Customer and the person's
    live record stays where it was."""
    survivor = ContactFactory(lifecycle_stage=LifecycleStage.PATIENT)
    loser = ContactFactory(lifecycle_stage=LifecycleStage.PATIENT)
    merged = key_client(["contacts:write"]).post(
        f"/api/v1/contacts/{survivor.pk}/merge", {"loser": loser.pk}, format="json"
    )
    assert merged.status_code == 200, merged.content
    client = key_client(["deals:write"])
    created = client.post(DEALS, {"name": "Stale id", "amount": "50", "contact": loser.pk}, format="json")
    assert created.status_code == 201, created.content
    moved = client.post(f"{DEALS}/{created.json()['id']}/move", {"stage": "closedwon"}, format="json")
    assert moved.status_code == 200, moved.content
    survivor.refresh_from_db()
    loser.refresh_from_db()
    assert loser.lifecycle_stage == LifecycleStage.PATIENT
    assert survivor.lifecycle_stage == LifecycleStage.ACTIVE_CUSTOMER
    assert created.json()["contact"] == survivor.pk
