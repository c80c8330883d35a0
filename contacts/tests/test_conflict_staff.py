"""Staff edits under the conflict policy (contacts/conflict.py): a staff edit is the CRM's own
write, made now, so app events older than it are stale for the groups it changed; and
contact_sync decides on locked stamps, so two syncs racing end with the newer values."""

import datetime as dt
import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from contacts.models import Activity, Contact
from contacts.services import contact_sync
from contacts.tests.admin_forms import change_form_data
from contacts.tests.factories import ContactFactory
from integrations.models import SyncEvent
from integrations.tasks import inbox_apply
from tests.support import race, wait_until

pytestmark = pytest.mark.django_db
EVENTS = "/api/v1/events"
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def app(key_client):
    return key_client(["events:write", "events:read"], name="mobile app")


@pytest.fixture
def staff(client, admin_user):
    client.force_login(admin_user)
    return client


def patch(client, contact, **fields):
    response = client.patch(f"/api/v1/contacts/{contact.pk}", fields, content_type="application/json")
    assert response.status_code == 200, response.content
    return response


def send(app, key, type, occurred_at, source="app", **properties):
    """POST one event for app user u-1, then run the inbox applier; the event's outcome."""
    body = {
        "type": type,
        "user": {"external_id": "u-1"},
        "occurred_at": occurred_at.isoformat(),
        "properties": properties,
        "source": source,
    }
    response = app.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 202, response.content
    inbox_apply()
    answer = app.get(f"{EVENTS}/{response.json()['event']['id']}").json()
    assert answer["status"] == "applied", answer
    return answer["result"]


def test_an_app_profile_event_older_than_a_staff_patch_is_stale_and_the_staff_value_stays(staff, app):
    contact = ContactFactory(external_id="u-1", first_name="Ann")
    patch(staff, contact, first_name="Anna")
    result = send(app, "old", "profile_updated", timezone.now() - HOUR, first_name="Annie")
    contact.refresh_from_db()
    assert contact.first_name == "Anna"
    assert result["stale"] == ["first_name"]
    activity = Activity.objects.get(contact=contact, type="profile_updated")
    assert activity.properties["_stale_fields"] == ["first_name"]
    assert SyncEvent.objects.get(event_type="profile_updated").status == SyncEvent.Status.SKIPPED_STALE


def test_an_app_profile_event_newer_than_a_staff_patch_applies(staff, app):
    contact = ContactFactory(external_id="u-1", first_name="Ann")
    patch(staff, contact, first_name="Anna")
    result = send(app, "new", "profile_updated", timezone.now() + dt.timedelta(seconds=1), first_name="Annie")
    contact.refresh_from_db()
    assert (contact.first_name, result["stale"]) == ("Annie", [])


def test_a_patch_that_changes_nothing_stamps_nothing(staff, app):
    contact = ContactFactory(external_id="u-1", first_name="Ann")
    patch(staff, contact, first_name="Ann")
    assert Contact.objects.get(pk=contact.pk).group_timestamps == {}
    result = send(app, "old", "profile_updated", timezone.now() - HOUR, first_name="Annie")
    assert result["stale"] == [] and Contact.objects.get(pk=contact.pk).first_name == "Annie"


def test_an_app_engagement_event_newer_than_a_staff_edit_of_the_group_still_applies(staff, app):
    contact = ContactFactory(external_id="u-1")
    patch(staff, contact, engagement_tier="gold")
    logged_in = timezone.now() + dt.timedelta(seconds=1)
    result = send(app, "login", "user_logged_in", logged_in)
    contact.refresh_from_db()
    assert result["stale"] == []
    assert (contact.last_login_at, contact.engagement_tier) == (logged_in, "gold")
    assert contact.group_timestamps["engagement"]["source"] == "app"


def test_an_app_engagement_event_older_than_a_staff_edit_of_the_group_is_stale(staff, app):
    """Staff rank with the app on engagement fields: the time decides, not the app's rank."""
    contact = ContactFactory(external_id="u-1")
    patch(staff, contact, engagement_tier="gold")
    result = send(app, "login", "user_logged_in", timezone.now() - HOUR)
    contact.refresh_from_db()
    assert result["stale"] == ["last_login_at"] and contact.last_login_at is None


def test_an_outside_crm_does_not_overwrite_a_staff_engagement_edit_even_when_newer(staff, key_client):
    contact = ContactFactory(external_id="u-1")
    patch(staff, contact, engagement_tier="gold")
    connector = key_client(["events:write", "events:read", "events:sources"], name="crm connector")
    result = send(connector, "crm", "user_logged_in", timezone.now() + dt.timedelta(seconds=1), source="crm")
    contact.refresh_from_db()
    assert result["stale"] == ["last_login_at"] and contact.last_login_at is None


def test_a_contact_staff_create_through_the_api_stamps_what_it_set(staff, app):
    response = staff.post(
        "/api/v1/contacts", {"external_id": "u-1", "first_name": "Anna"}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    result = send(app, "old", "profile_updated", timezone.now() - HOUR, first_name="Annie")
    assert result["stale"] == ["first_name"] and Contact.objects.get(external_id="u-1").first_name == "Anna"


def test_an_admin_change_form_save_stamps_the_groups_it_changed(staff, app):
    contact = ContactFactory(external_id="u-1", first_name="Ann")
    url = f"/admin/contacts/contact/{contact.pk}/change/"
    response = staff.post(url, {**change_form_data(staff, url), "first_name": "Anna"})
    assert response.status_code == 302, response.content.decode()[:2000]
    stamps = Contact.objects.get(pk=contact.pk).group_timestamps
    assert set(stamps) == {"identity"} and stamps["identity"]["source"] == "staff"
    result = send(app, "old", "profile_updated", timezone.now() - HOUR, first_name="Annie")
    assert result["stale"] == ["first_name"] and Contact.objects.get(pk=contact.pk).first_name == "Anna"


def _lock_waiters() -> int:
    """Connections to this database waiting for a lock (read afresh: inside a transaction
    PostgreSQL would keep showing the activity it read first)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_two_syncs_racing_end_with_the_newer_values(system_actor):
    """A third connection holds the contact's row while the newer sync, then the older one,
    queue behind it; released, they run in that order. Had the older one decided on the
    stamps it read before waiting, it would overwrite the newer value."""
    contact = ContactFactory(external_id="u-1", first_name="Ann")
    now = timezone.now()
    held = threading.Event()

    def work(n):
        if n == 0:
            with transaction.atomic():
                Contact.objects.select_for_update().get(pk=contact.pk)
                held.set()
                wait_until(lambda: _lock_waiters() >= 2)
            return None
        held.wait(20)
        if n == 2:
            wait_until(lambda: _lock_waiters() >= 1)  # the newer sync is queued first
        first_name, occurred_at = ("Newer", now) if n == 1 else ("Older", now - HOUR)
        return contact_sync(
            actor=system_actor, sync_source="app", occurred_at=occurred_at, external_id="u-1", first_name=first_name
        )

    _, (_, _, newer_stale), (_, _, older_stale) = race(3, work)
    contact.refresh_from_db()
    assert contact.first_name == "Newer"
    assert (newer_stale, older_stale) == ({}, {"first_name": "Older"})
    assert contact.group_timestamps["identity"]["at"] == now.isoformat()


def test_a_bulk_import_stamps_the_groups_its_rows_set_as_a_staff_edit(app, key_client):
    """POST /api/v1/contacts/bulk-upsert is a CRM-side write made now, as a PATCH is: an app
    event older than the import is stale for the fields it set, on updated and new contacts."""
    ContactFactory(email=None, external_id="u-1", first_name="Ann")
    importer = key_client(["contacts:write"], name="importer")
    rows = [{"external_id": "u-1", "first_name": "Annie"}, {"external_id": "u-2", "first_name": "Bo"}]
    response = importer.post("/api/v1/contacts/bulk-upsert", {"contacts": rows}, format="json")
    assert [r["status"] for r in response.json()["results"]] == ["updated", "created"]
    for user in ("u-1", "u-2"):
        stamp = Contact.objects.get(external_id=user).group_timestamps["identity"]
        assert stamp["source"] == "staff", stamp
    result = send(app, "old", "profile_updated", timezone.now() - dt.timedelta(hours=1), first_name="Anne")
    assert result["stale"] == ["first_name"]
    assert Contact.objects.get(external_id="u-1").first_name == "Annie"
