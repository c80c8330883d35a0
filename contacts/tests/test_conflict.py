import datetime as dt

import pytest
from django.utils import timezone

from contacts.services import contact_sync
from contacts.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db
T0 = timezone.now() - dt.timedelta(days=1)


def at(hours):
    return T0 + dt.timedelta(hours=hours)


def test_newer_write_of_an_equal_source_wins_and_older_is_stale(system_actor):
    contact, created, stale = contact_sync(
        actor=system_actor, sync_source="app", occurred_at=at(2), email="a@example.com", first_name="New"
    )
    assert created and stale == {}
    contact, _, stale = contact_sync(
        actor=system_actor, sync_source="crm", occurred_at=at(1), email="a@example.com", first_name="Old"
    )
    assert stale == {"first_name": "Old"} and contact.first_name == "New"
    contact, _, stale = contact_sync(
        actor=system_actor, sync_source="crm", occurred_at=at(3), email="a@example.com", first_name="Newest"
    )
    assert stale == {} and contact.first_name == "Newest"


def test_the_app_wins_engagement_fields_over_the_crm_whatever_the_time(system_actor):
    contact_sync(
        actor=system_actor, sync_source="app", occurred_at=at(1), email="a@example.com", engagement_tier="gold"
    )
    contact, _, stale = contact_sync(
        actor=system_actor,
        sync_source="crm",
        occurred_at=at(5),
        email="a@example.com",
        engagement_tier="bronze",
        city="Oslo",
    )
    assert stale == {"engagement_tier": "bronze"}
    assert (contact.engagement_tier, contact.city) == ("gold", "Oslo")
    assert contact.group_timestamps["engagement"]["source"] == "app"
    assert contact.group_timestamps["identity"]["source"] == "crm"


def test_the_crm_wins_the_health_profile(system_actor):
    """Seed 002: "health profile (age, height): CRM data wins". The age is the date of birth."""
    contact, _, stale = contact_sync(
        actor=system_actor,
        sync_source="crm",
        occurred_at=at(1),
        email="a@example.com",
        date_of_birth=dt.date(1980, 5, 1),
    )
    assert stale == {} and contact.group_timestamps["health_profile"]["source"] == "crm"
    contact, _, stale = contact_sync(
        actor=system_actor,
        sync_source="app",
        occurred_at=at(9),
        email="a@example.com",
        date_of_birth=dt.date(1990, 1, 1),
        first_name="Ann",
    )
    assert stale == {"date_of_birth": dt.date(1990, 1, 1)}
    assert (contact.date_of_birth, contact.first_name) == (dt.date(1980, 5, 1), "Ann")
    contact, _, stale = contact_sync(
        actor=system_actor,
        sync_source="crm",
        occurred_at=at(12),
        email="a@example.com",
        date_of_birth=dt.date(1981, 5, 1),
    )
    assert stale == {} and contact.date_of_birth == dt.date(1981, 5, 1)


def test_an_existing_contact_without_stamps_accepts_the_first_source(system_actor):
    ContactFactory(email="x@example.com", first_name="Staff")
    contact, created, stale = contact_sync(
        actor=system_actor, sync_source="app", occurred_at=at(1), email="x@example.com", first_name="App"
    )
    assert not created and stale == {} and contact.first_name == "App"
