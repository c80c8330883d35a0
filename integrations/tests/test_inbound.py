import pytest
from django.utils import timezone

from contacts.models import Activity, Contact, Order, Ticket
from contacts.tests.factories import ContactFactory
from crm_platform.models import IdempotencyRecord
from leads.models import Lead

pytestmark = pytest.mark.django_db
EVENTS = "/api/v1/events"
BATCH = "/api/v1/events/batch"
APP_EVENT = "/api/crm/webhooks/app-event"


@pytest.fixture
def app(key_client):
    return key_client(["events:write"], name="mobile app")


def send(client, url, body, key="k-1"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(url, body, format="json", **headers)


def test_account_created_makes_the_contact_and_the_timeline(app):
    body = {
        "type": "account_created",
        "user": {"external_id": "u-1", "email": "Ann@Example.com"},
        "properties": {"first_name": "Ann"},
    }
    response = send(app, EVENTS, body)
    assert response.status_code == 202, response.content
    contact = Contact.objects.get(external_id="u-1")
    assert (contact.email, contact.first_name, contact.source) == ("ann@example.com", "Ann", "app")
    assert response.json()["result"]["contact"] == contact.pk
    assert Activity.objects.filter(contact=contact, type="account_created").count() == 1


def test_replay_with_the_same_key_changes_nothing(app):
    body = {"type": "account_created", "user": {"external_id": "u-1"}}
    first, again = send(app, EVENTS, body), send(app, EVENTS, body)
    assert again.status_code == 202 and again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Activity.objects.count() == 1 and Contact.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "teleport", "user": {"external_id": "u-1"}}, "type"),
        ({"type": "food_logged"}, "user"),
        ({"type": "food_logged", "user": {}}, "user.non_field_errors"),
        ({"type": "order_placed", "user": {"external_id": "u-1"}, "properties": {"amount": "-3"}}, "properties.amount"),
        ({"type": "food_logged", "user": {"external_id": "nobody"}}, "user"),
    ],
)
def test_bad_events_are_400_with_fields_and_write_nothing(app, body, field):
    ContactFactory(email=None, external_id="u-1")
    response = send(app, EVENTS, body)
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert not Activity.objects.exists() and not IdempotencyRecord.objects.exists()


def test_missing_key_is_400_and_wrong_scope_403(app, key_client):
    body = {"type": "custom", "user": {"external_id": "u-1"}}
    assert send(app, EVENTS, body, key=None).json()["error"]["code"] == "idempotency_key_missing"
    assert send(key_client(["contacts:write"]), EVENTS, body).status_code == 403


def test_order_and_ticket_events_use_the_crm_services(app):
    contact = ContactFactory(email=None, external_id="u-1", lifecycle_stage="patient")
    send(
        app,
        EVENTS,
        {"type": "order_placed", "user": {"external_id": "u-1"}, "properties": {"order_id": "o-9", "amount": "30.00"}},
        key="o",
    )
    send(
        app,
        EVENTS,
        {
            "type": "support_ticket_created",
            "user": {"external_id": "u-1"},
            "properties": {"subject": "Late refill", "priority": "high"},
        },
        key="t",
    )
    contact.refresh_from_db()
    assert Order.objects.get(external_id="o-9").contact == contact and contact.lifecycle_stage == "active_customer"
    assert Ticket.objects.get(contact=contact).priority == "high"


def test_a_stale_event_lands_on_the_timeline_but_is_not_applied(app):
    now = timezone.now()
    send(
        app,
        EVENTS,
        {
            "type": "profile_updated",
            "user": {"external_id": "u-1"},
            "occurred_at": now.isoformat(),
            "properties": {"first_name": "New"},
        },
        key="a",
    )
    old = (now - timezone.timedelta(days=1)).isoformat()
    response = send(
        app,
        EVENTS,
        {
            "type": "profile_updated",
            "user": {"external_id": "u-1"},
            "occurred_at": old,
            "properties": {"first_name": "Old"},
        },
        key="b",
    )
    assert response.json()["result"]["stale"] == ["first_name"]
    assert Contact.objects.get(external_id="u-1").first_name == "New"
    assert Activity.objects.filter(type="profile_updated").count() == 2


def test_lead_captured_event_captures_a_lead(app):
    send(
        app,
        EVENTS,
        {
            "type": "lead_captured",
            "user": {"email": "lead@example.com"},
            "properties": {"source": "website_form", "first_name": "Lee"},
        },
    )
    assert Lead.objects.get(contact__email="lead@example.com").source == "website_form"


def test_batch_reports_each_event_and_replays_by_id(app):
    ContactFactory(email=None, external_id="u-1")
    events = [
        {"id": "e1", "type": "page_viewed", "user": {"external_id": "u-1"}, "properties": {"path": "/plans"}},
        {"id": "e2", "type": "teleport", "user": {"external_id": "u-1"}},
        {"type": "custom", "user": {"external_id": "u-1"}},
        {"id": "e3", "type": "food_logged", "user": {"external_id": "nobody"}},
    ]
    body = app.post(BATCH, {"events": events}, format="json").json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "rejected", "rejected"]
    assert "type" in body["results"][1]["errors"] and "user" in body["results"][3]["errors"]
    again = app.post(BATCH, {"events": events[:1]}, format="json").json()
    assert again["results"][0]["status"] == "replayed" and again["replayed"] == 1
    assert Activity.objects.filter(type="page_viewed").count() == 1
    changed = [{**events[0], "properties": {"path": "/other"}}]
    assert app.post(BATCH, {"events": changed}, format="json").json()["results"][0]["status"] == "rejected"


def test_malformed_batch_is_400(app):
    assert app.post(BATCH, {"events": []}, format="json").status_code == 400
    assert app.post(BATCH, {"events": "nope"}, format="json").status_code == 400
    too_many = [{"id": str(n), "type": "custom", "user": {"external_id": "u"}} for n in range(1001)]
    assert app.post(BATCH, {"events": too_many}, format="json").status_code == 400


def test_seed_002_app_event_is_served_exactly(app):
    ContactFactory(email=None, external_id="user_123")
    body = {
        "entityType": "food_log",
        "operation": "create",
        "userId": "user_123",
        "externalId": "food_12345",
        "payload": {"food_name": "Grilled Chicken", "calories": 450, "date": "2025-12-28"},
    }
    response = send(app, APP_EVENT, body, key="food_12345_1703808000")
    assert response.status_code == 202, response.content
    data = response.json()
    assert (data["status"], data["idempotencyKey"], data["result"]["status"]) == (
        "accepted",
        "food_12345_1703808000",
        "success",
    )
    activity = Activity.objects.get(type="food_logged")
    assert activity.occurred_at.date().isoformat() == "2025-12-28"
    assert activity.properties["external_id"] == "food_12345"
    again = send(app, APP_EVENT, body, key="food_12345_1703808000")
    assert again.json()["idempotencyKey"] == data["idempotencyKey"] and Activity.objects.count() == 1


def test_seed_002_unmapped_pair_is_400_naming_it(app):
    body = {"entityType": "spaceship", "operation": "create", "userId": "u", "payload": {}}
    response = send(app, APP_EVENT, body)
    assert response.status_code == 400 and "spaceship/create" in str(response.json()["error"]["fields"])


def test_events_per_app_user_are_rate_limited(app, settings):
    from django.test import override_settings

    ContactFactory(email=None, external_id="u-1")
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "app_user": "2/min"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        codes = [
            send(app, EVENTS, {"type": "custom", "user": {"external_id": "u-1"}}, key=f"r{n}").status_code
            for n in range(3)
        ]
        other = send(app, EVENTS, {"type": "account_created", "user": {"external_id": "u-2"}}, key="other")
    assert codes == [202, 202, 429] and other.status_code == 202
