"""Merging two contacts through the API, then what happens to the person afterwards: their
identifiers still capture and update them (leads, bulk upsert, app events), and their stage and
activity follow, so the nightly sweep judges the merged person, not one half of them."""

import datetime as dt
import importlib

import pytest
from django.utils import timezone

from compliance.models import AuditEvent
from contacts.lifecycle import Stage
from contacts.models import Contact, LifecycleTransition
from contacts.tasks import lifecycle_sweep
from contacts.tests.factories import ContactFactory
from integrations.tasks import inbox_apply

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(key_client):
    return key_client(["contacts:write", "contacts:read", "leads:write", "events:write", "events:read"])


def merge(client, survivor, loser):
    response = client.post(f"/api/v1/contacts/{survivor.pk}/merge", {"loser": loser.pk}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def app_event(client, user):
    """One app event (a profile update: it writes the contact through contact_sync) through the
    batch route and the inbox applier; its stored outcome."""
    event = {"id": "e1", "type": "profile_updated", "user": user, "properties": {"first_name": "Pat"}}
    response = client.post("/api/v1/events/batch", {"events": [event]}, format="json")
    assert response.status_code == 202, response.content
    inbox_apply()
    return client.get(f"/api/v1/events/{response.json()['results'][0]['event']}").json()


# ----------------------------------------------------------------------------- identifiers


@pytest.fixture
def app_user_and_signup(client):
    """The usual duplicate: the app's record (user id, no email) and a newsletter sign-up."""
    app_user = ContactFactory(email=None, external_id="u-1")
    signup = ContactFactory(email="pat@example.com", external_id=None)
    merge(client, app_user, signup)
    return app_user, signup


def test_merge_moves_an_email_the_survivor_lacks_from_the_merged_away_contact(client, app_user_and_signup):
    app_user, signup = app_user_and_signup
    app_user.refresh_from_db()
    signup.refresh_from_db()
    assert app_user.email == "pat@example.com" and app_user.external_id == "u-1"
    assert signup.email is None and signup.merged_into_id == app_user.pk and signup.is_archived
    audit = AuditEvent.objects.get(action="contact.merge", object_id=str(app_user.pk))
    assert audit.changes["identifiers"]["new"] == ["email"]


def test_after_a_merge_a_lead_with_the_merged_away_email_is_captured_on_the_survivor(client, app_user_and_signup):
    app_user, _ = app_user_and_signup
    response = client.post("/api/v1/leads", {"email": "pat@example.com", "source": "website_form"}, format="json")
    assert response.status_code == 201, response.content
    assert Contact.objects.get(email="pat@example.com").pk == app_user.pk


def test_after_a_merge_a_bulk_upsert_of_the_merged_away_email_updates_the_survivor(client, app_user_and_signup):
    app_user, _ = app_user_and_signup
    body = client.post(
        "/api/v1/contacts/bulk-upsert", {"contacts": [{"email": "pat@example.com", "city": "Oslo"}]}, format="json"
    ).json()
    assert body["results"][0] == {"index": 0, "status": "updated", "id": app_user.pk}
    app_user.refresh_from_db()
    assert app_user.city == "Oslo"


def test_after_a_merge_an_app_event_naming_both_identifiers_lands_on_the_survivor(client, app_user_and_signup):
    app_user, _ = app_user_and_signup
    outcome = app_event(client, {"external_id": "u-1", "email": "pat@example.com"})
    assert outcome["status"] == "applied", outcome
    assert outcome["result"]["contact"] == app_user.pk


def test_merge_moves_an_app_user_id_the_survivor_lacks(client):
    signup = ContactFactory(email="pat@example.com", external_id=None)
    app_user = ContactFactory(email=None, external_id="u-1")
    merge(client, signup, app_user)
    signup.refresh_from_db()
    assert signup.email == "pat@example.com" and signup.external_id == "u-1"
    outcome = app_event(client, {"external_id": "u-1", "email": "pat@example.com"})
    assert outcome["status"] == "applied" and outcome["result"]["contact"] == signup.pk
    body = client.post("/api/v1/contacts/bulk-upsert", {"contacts": [{"external_id": "u-1"}]}, format="json").json()
    assert body["results"][0] == {"index": 0, "status": "updated", "id": signup.pk}


def test_when_both_have_an_email_the_merged_away_one_stays_put_and_still_finds_the_survivor(client):
    survivor = ContactFactory(email="work@example.com", external_id=None)
    loser = ContactFactory(email="home@example.com", external_id="u-9")
    merge(client, survivor, loser)
    survivor.refresh_from_db()
    loser.refresh_from_db()
    assert survivor.email == "work@example.com" and survivor.external_id == "u-9"
    assert loser.email == "home@example.com" and loser.external_id is None
    lead = client.post("/api/v1/leads", {"email": "home@example.com", "source": "website_form"}, format="json")
    assert lead.status_code == 201, lead.content
    body = client.post(
        "/api/v1/contacts/bulk-upsert", {"contacts": [{"email": "home@example.com", "city": "Oslo"}]}, format="json"
    ).json()
    assert body["results"][0] == {"index": 0, "status": "updated", "id": survivor.pk}
    outcome = app_event(client, {"external_id": "u-9", "email": "home@example.com"})
    assert outcome["status"] == "applied" and outcome["result"]["contact"] == survivor.pk
    survivor.refresh_from_db()
    assert survivor.email == "work@example.com" and survivor.city == "Oslo"


def test_a_merge_group_whose_merged_away_contact_gave_up_its_identifiers_can_be_erased(client, key_client):
    app_user = ContactFactory(email=None, external_id="u-1")
    signup = ContactFactory(email="pat@example.com", external_id=None)
    merge(client, app_user, signup)
    response = key_client(["gdpr:write"]).post(f"/api/v1/contacts/{app_user.pk}/erase")
    assert response.status_code == 200, response.content
    assert sorted(response.json()["contacts"]) == sorted([app_user.pk, signup.pk])
    assert not Contact.objects.filter(pk__in=[app_user.pk, signup.pk]).exists()


def test_the_migration_gives_identifiers_of_earlier_merges_to_their_survivors(client):
    """Contacts merged before merges moved identifiers: the merged-away row kept its email."""
    from django.apps import apps

    migration = importlib.import_module("contacts.migrations.0004_merged_contact_identity")
    a, b, c = (ContactFactory(email=None, external_id=f"u-{n}") for n in "abc")
    signup = ContactFactory(email="pat@example.com", external_id=None)
    Contact.objects.filter(pk=signup.pk).update(merged_into=b, is_archived=True)
    Contact.objects.filter(pk=b.pk).update(merged_into=c, is_archived=True)  # a chain: c survives
    Contact.objects.filter(pk=a.pk).update(merged_into=c, is_archived=True)
    migration.give_identifiers_to_survivors(apps, None)
    assert Contact.objects.get(email="pat@example.com").pk == c.pk
    assert Contact.objects.get(pk=signup.pk).email is None
    assert Contact.objects.get(pk=a.pk).external_id == "u-a"  # c has one: a's stays, and finds c
    response = client.post("/api/v1/leads", {"email": "pat@example.com", "source": "website_form"}, format="json")
    assert response.status_code == 201, response.content


# ----------------------------------------------------------------------------- stage and activity


def test_a_merged_in_subscriber_is_not_churned_by_the_sweep(client):
    long_ago = timezone.now() - dt.timedelta(days=200)
    recently = timezone.now() - dt.timedelta(hours=1)
    survivor = ContactFactory(lifecycle_stage=Stage.LEAD, created_at=long_ago, last_active_at=long_ago)
    loser = ContactFactory(lifecycle_stage=Stage.SUBSCRIBER, last_active_at=recently, last_login_at=recently)
    body = merge(client, survivor, loser)
    assert body["lifecycle_stage"] == Stage.SUBSCRIBER
    lifecycle_sweep()
    survivor.refresh_from_db()
    assert survivor.lifecycle_stage == Stage.SUBSCRIBER
    assert survivor.last_active_at == recently and survivor.last_login_at == recently
    move = LifecycleTransition.objects.filter(contact=survivor, reason="merge").get()
    assert (move.from_stage, move.to_stage) == (Stage.LEAD, Stage.SUBSCRIBER)


def test_merge_keeps_the_later_activity_dates_of_the_two(client):
    early, late = timezone.now() - dt.timedelta(days=3), timezone.now() - dt.timedelta(days=1)
    survivor = ContactFactory(last_active_at=late, last_login_at=None)
    loser = ContactFactory(last_active_at=early, last_login_at=early)
    merge(client, survivor, loser)
    survivor.refresh_from_db()
    assert survivor.last_active_at == late and survivor.last_login_at == early


@pytest.mark.parametrize(
    ("survivor_stage", "loser_stage"),
    [
        (Stage.SUBSCRIBER, Stage.LEAD),  # the survivor is further along
        (Stage.SUBSCRIBER, Stage.CHURNED),  # a decline is the sweep's to decide, on the merged activity
        (Stage.ACTIVE_CUSTOMER, Stage.AT_RISK),
        (Stage.CHURNED, Stage.SUBSCRIBER),  # the state machine: only Won-Back leaves Churned
    ],
)
def test_merge_does_not_move_the_survivor_back_or_where_the_state_machine_forbids(client, survivor_stage, loser_stage):
    survivor = ContactFactory(lifecycle_stage=survivor_stage)
    loser = ContactFactory(lifecycle_stage=loser_stage)
    assert merge(client, survivor, loser)["lifecycle_stage"] == survivor_stage
    assert not LifecycleTransition.objects.filter(reason="merge").exists()


def test_merge_takes_the_churn_risk_last_written_under_the_conflict_policy(client):
    written = timezone.now() - dt.timedelta(days=1)
    survivor = ContactFactory(churn_risk=0.9)  # never written by a source: the default's place
    loser = ContactFactory(churn_risk=0.2, group_timestamps=_engagement_stamp("app", 2, written))
    merge(client, survivor, loser)
    survivor.refresh_from_db()
    assert survivor.churn_risk == 0.2

    kept = ContactFactory(churn_risk=0.7, group_timestamps=_engagement_stamp("app", 2, written))
    older = ContactFactory(churn_risk=0.1, group_timestamps=_engagement_stamp("app", 2, written - dt.timedelta(1)))
    merge(client, kept, older)
    kept.refresh_from_db()
    assert kept.churn_risk == 0.7


def _engagement_stamp(source, rank, at):
    return {"engagement": {"source": source, "rank": rank, "at": at.isoformat()}}


def test_after_a_merge_an_older_login_does_not_take_last_login_back(client):
    """The survivor took the later last login of the two, but kept its own (older) engagement
    stamp: a login event older than the merged-away contact's last login, newer than the
    survivor's, was applied and took last_login_at back in time. Found by a review."""
    t0 = timezone.now().replace(microsecond=0) - dt.timedelta(hours=3)
    survivor = ContactFactory(external_id="u-surv")
    loser = ContactFactory(external_id="u-lost")

    def login(user, minutes, key):
        body = {
            "type": "user_logged_in",
            "user": {"external_id": user},
            "occurred_at": (t0 + dt.timedelta(minutes=minutes)).isoformat(),
        }
        response = client.post("/api/v1/events", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
        assert response.status_code == 202, response.content
        inbox_apply()
        return client.get(f"/api/v1/events/{response.json()['event']['id']}").json()

    login("u-surv", 10, "a")
    login("u-lost", 60, "b")
    merge(client, survivor, loser)
    survivor.refresh_from_db()
    assert survivor.last_login_at == t0 + dt.timedelta(minutes=60)
    answer = login("u-surv", 30, "c")  # older than the person's last login: stale
    survivor.refresh_from_db()
    assert survivor.last_login_at == t0 + dt.timedelta(minutes=60)
    assert answer["result"]["stale"] == ["last_login_at"]
