import pytest
from django.utils import timezone

from contacts.models import Activity, Contact, Order, Subscription, Ticket
from contacts.tests.factories import ContactFactory
from integrations.models import InboundEvent, SyncEvent
from integrations.tasks import inbox_apply
from leads.models import Lead

pytestmark = pytest.mark.django_db
EVENTS = "/api/v1/events"
BATCH = "/api/v1/events/batch"
APP_EVENT = "/api/crm/webhooks/app-event"


def send(client, url, body, key="k-1", apply=True):
    """POST an event, then let the inbox applier run (as the worker does after the kick)."""
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    response = client.post(url, body, format="json", **headers)
    if apply:
        inbox_apply()
    return response


def outcome(client, response) -> dict:
    """GET /api/v1/events/{id} for the event a 202 queued."""
    event = response.json()["event"]["id"] if "event" in response.json() else response.json()["result"]["data"]["event"]
    answer = client.get(f"{EVENTS}/{event}")
    assert answer.status_code == 200, answer.content
    return answer.json()


def test_account_created_makes_the_contact_and_the_timeline(app):
    body = {
        "type": "account_created",
        "user": {"external_id": "u-1", "email": "Ann@Example.com"},
        "properties": {"first_name": "Ann"},
    }
    response = send(app, EVENTS, body, apply=False)
    assert response.status_code == 202, response.content
    queued = response.json()
    assert queued["status"] == "accepted" and queued["event"]["status"] == "queued"
    assert queued["event"]["type"] == "account_created" and not Contact.objects.exists()
    assert outcome(app, response)["status"] == "queued"
    assert inbox_apply() == {"applied": 1, "failed": 0, "batches": 1}
    contact = Contact.objects.get(external_id="u-1")
    assert (contact.email, contact.first_name, contact.source) == ("ann@example.com", "Ann", "app")
    state = outcome(app, response)
    assert state["status"] == "applied" and state["result"]["contact"] == contact.pk and state["errors"] is None
    assert Activity.objects.filter(contact=contact, type="account_created").count() == 1
    assert InboundEvent.objects.get().payload is None  # cleared once applied


def test_replay_with_the_same_key_changes_nothing(app):
    body = {"type": "account_created", "user": {"external_id": "u-1"}}
    first, again = send(app, EVENTS, body, apply=False), send(app, EVENTS, body)
    assert again.status_code == 202 and again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    later = send(app, EVENTS, body)  # after it was applied: still the first answer, nothing new
    assert later.json() == first.json() and later["Idempotent-Replayed"] == "true"
    assert Activity.objects.count() == 1 and Contact.objects.count() == 1 and InboundEvent.objects.count() == 1


def test_same_key_with_another_body_is_422(app):
    send(app, EVENTS, {"type": "account_created", "user": {"external_id": "u-1"}})
    response = send(app, EVENTS, {"type": "account_created", "user": {"external_id": "u-2"}})
    assert response.status_code == 422 and response.json()["error"]["code"] == "idempotency_key_reused"
    assert not Contact.objects.filter(external_id="u-2").exists()


def test_an_event_for_a_user_whose_sign_up_is_queued_is_accepted(app):
    """The sign-up is still in the inbox when the next event names the user: both apply, in order."""
    send(app, EVENTS, {"type": "account_created", "user": {"external_id": "u-9"}}, key="a", apply=False)
    response = send(app, EVENTS, {"type": "user_logged_in", "user": {"external_id": "u-9"}}, key="b", apply=False)
    assert response.status_code == 202, response.content
    assert inbox_apply()["applied"] == 2
    contact = Contact.objects.get(external_id="u-9")
    assert contact.last_login_at is not None
    assert list(Activity.objects.filter(contact=contact).order_by("id").values_list("type", flat=True)) == [
        "account_created",
        "user_logged_in",
    ]


def test_an_event_that_fails_when_applied_is_failed_with_its_errors_and_can_be_applied_again(app, system_actor):
    from integrations.inbox import inbox_retry

    ContactFactory(email=None, external_id="u-1")
    Subscription.objects.create(contact=ContactFactory(), plan="Core", external_id="s-1")  # another user's
    body = {"type": "subscription_cancelled", "user": {"external_id": "u-1"}, "properties": {"subscription_id": "s-1"}}
    response = send(app, EVENTS, body)
    state = outcome(app, response)
    assert state["status"] == "failed" and "properties.subscription_id" in state["errors"]
    row = InboundEvent.objects.get()
    assert row.payload is not None  # kept, for "apply again"
    assert SyncEvent.objects.filter(direction="inbound", status="failed", event_type="subscription_cancelled").exists()
    assert inbox_retry(ids=[row.pk], actor=system_actor) == 1
    assert outcome(app, response)["status"] == "queued"
    assert inbox_apply()["failed"] == 1  # still another user's subscription: failed again, nothing written


def test_event_detail_shows_only_the_senders_own_events(app, key_client):
    ContactFactory(email=None, external_id="u-1")
    response = send(app, EVENTS, {"type": "custom", "user": {"external_id": "u-1"}})
    event = response.json()["event"]["id"]
    other = key_client(["events:read"], name="someone else")
    assert other.get(f"{EVENTS}/{event}").status_code == 404
    assert key_client(["events:write"], name="no read").get(f"{EVENTS}/{event}").status_code == 403


def test_the_rotated_key_replays_its_predecessors_events_and_reads_them(make_key, system_actor):
    """Events sent with a key are the client's: after a rotation, a resent event (single or in a
    batch) replays, and the successor reads the outcome."""
    from datetime import timedelta

    from rest_framework.test import APIClient

    from crm_platform.services import api_key_rotate

    ContactFactory(email=None, external_id="u-1")
    old, old_raw = make_key(["events:write", "events:read"])
    sender = APIClient()
    sender.credentials(HTTP_AUTHORIZATION=f"Bearer {old_raw}")
    body = {"type": "custom", "user": {"external_id": "u-1"}}
    first = send(sender, EVENTS, body)
    batch = [{"id": "b-1", **body}]
    first_batch = sender.post(BATCH, {"events": batch}, format="json").json()
    _, new_raw = api_key_rotate(api_key=old, actor=system_actor, overlap=timedelta(hours=1))
    sender.credentials(HTTP_AUTHORIZATION=f"Bearer {new_raw}")
    again = send(sender, EVENTS, body)
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    resent = sender.post(BATCH, {"events": batch}, format="json").json()["results"][0]
    assert resent["status"] == "replayed" and resent["event"] == first_batch["results"][0]["event"]
    inbox_apply()
    assert InboundEvent.objects.count() == 2 and Activity.objects.filter(type="custom").count() == 2
    assert outcome(sender, first)["status"] == "applied"


def test_an_event_from_the_future_is_400_within_a_clock_skew_it_is_taken(app):
    """A device clock far ahead would stamp the contact's fields in the future and make every
    later event stale for them: beyond EVENT_FUTURE_TOLERANCE_SECONDS (5 min) it is refused."""
    import datetime as dt

    ContactFactory(email=None, external_id="u-1")
    ahead = timezone.now() + dt.timedelta(hours=2)
    body = {"type": "user_logged_in", "user": {"external_id": "u-1"}, "occurred_at": ahead.isoformat()}
    response = send(app, EVENTS, body, key="future")
    assert response.status_code == 400 and "occurred_at" in response.json()["error"]["fields"]
    events = [
        {**body, "id": "f-1"},
        {**body, "id": "f-2", "occurred_at": (timezone.now() + dt.timedelta(minutes=2)).isoformat()},
    ]
    results = app.post(BATCH, {"events": events}, format="json").json()["results"]
    assert [r["status"] for r in results] == ["rejected", "accepted"]
    assert "occurred_at" in results[0]["errors"]


def test_a_moment_before_year_1_in_utc_is_400_on_every_route(app, key_client):
    """ "0001-01-01T00:00:00+14:00" is 1 BC in UTC: PostgreSQL stored it, then no read of the
    contact, its timeline or its admin page could load it (a review found the 500s)."""
    ContactFactory(email=None, external_id="u-1")
    early = "0001-01-01T00:00:00+14:00"
    body = {"type": "user_logged_in", "user": {"external_id": "u-1"}, "occurred_at": early}
    response = send(app, EVENTS, body, key="early")
    assert response.status_code == 400 and "occurred_at" in response.json()["error"]["fields"]
    results = app.post(BATCH, {"events": [{**body, "id": "e-1"}]}, format="json").json()["results"]
    assert results[0]["status"] == "rejected" and "occurred_at" in results[0]["errors"]
    seed = {"entityType": "activity", "operation": "create", "userId": "u-1", "payload": {"occurredAt": early}}
    response = app.post(APP_EVENT, seed, format="json", HTTP_IDEMPOTENCY_KEY="early-seed")
    assert response.status_code == 400, response.content
    assert not InboundEvent.objects.exists()
    inbox_apply()
    reader = key_client(["contacts:read"], name="reader")
    assert reader.get(f"/api/v1/contacts/{Contact.objects.get().pk}/timeline").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "teleport", "user": {"external_id": "u-1"}}, "type"),
        ({"type": "food_logged"}, "user"),
        ({"type": "food_logged", "user": {}}, "user.non_field_errors"),
        ({"type": "order_placed", "user": {"external_id": "u-1"}, "properties": {"amount": "-3"}}, "properties.amount"),
        ({"type": "food_logged", "user": {"external_id": "nobody"}}, "user"),
        (
            {"type": "subscription_started", "user": {"external_id": "u-1"}, "properties": {"subscription_id": "s"}},
            "properties.plan",
        ),
    ],
)
def test_bad_events_are_400_with_fields_and_write_nothing(app, body, field):
    ContactFactory(email=None, external_id="u-1")
    response = send(app, EVENTS, body)
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert not Activity.objects.exists() and not InboundEvent.objects.exists()


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


@pytest.mark.parametrize(
    "between",
    [
        {"type": "user_logged_in"},  # the timeline path
        {"type": "lead_captured", "properties": {"source": "assessment"}},  # a handler, contact_sync
    ],
)
def test_an_event_naming_the_user_does_not_make_an_older_name_change_stale(app, between):
    """The identifiers that find the contact stamped the identity group with each event's
    time: after a login at t0+5 min, a name change made at t0+2 min (queued offline in the
    app) was stale and lost. Found by a review."""
    t0 = timezone.now() - timezone.timedelta(hours=1)
    user = {"external_id": "u-1"}
    at = lambda minutes: (t0 + timezone.timedelta(minutes=minutes)).isoformat()  # noqa: E731
    created = {"type": "account_created", "user": user, "occurred_at": at(0), "properties": {"first_name": "Old"}}
    send(app, EVENTS, created, key="a")
    assert outcome(app, send(app, EVENTS, {**between, "user": user, "occurred_at": at(5)}, key="b"))["status"] == (
        "applied"
    )
    renamed = {"type": "profile_updated", "user": user, "occurred_at": at(2), "properties": {"first_name": "New"}}
    response = send(app, EVENTS, renamed, key="c")
    assert outcome(app, response)["result"]["stale"] == []
    assert Contact.objects.get(external_id="u-1").first_name == "New"
    older = {**renamed, "occurred_at": at(1), "properties": {"first_name": "Older"}}
    assert outcome(app, send(app, EVENTS, older, key="d"))["result"]["stale"] == ["first_name"]  # still weighed


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
    assert outcome(app, response)["result"]["stale"] == ["first_name"]
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


def test_a_stale_lead_captured_event_is_recorded_stale_and_lands_on_the_timeline_at_its_time(app):
    """lead_capture dropped contact_sync's stale fields: a lead_captured event older than the
    name it carried was not applied (right) but answered and logged "applied" with no stale
    field, and its timeline entry was dated when it was applied, not when it happened. Found
    by a review."""
    now = timezone.now().replace(microsecond=0)
    user = {"external_id": "u-1"}
    renamed = {
        "type": "profile_updated",
        "user": user,
        "occurred_at": now.isoformat(),
        "properties": {"first_name": "New"},
    }
    send(app, EVENTS, renamed, key="a")
    old = now - timezone.timedelta(days=1)
    captured = {
        "type": "lead_captured",
        "user": user,
        "occurred_at": old.isoformat(),
        "properties": {"source": "website_form", "first_name": "Old"},
    }
    answer = outcome(app, send(app, EVENTS, captured, key="b"))
    contact = Contact.objects.get(external_id="u-1")
    assert contact.first_name == "New"
    assert answer["result"]["stale"] == ["first_name"]
    event = SyncEvent.objects.get(direction="inbound", event_type="lead_captured")
    assert (event.status, event.last_error) == ("skipped_stale", "stale: first_name")
    entry = Activity.objects.get(contact=contact, type="lead_captured")
    assert entry.occurred_at == old and entry.properties["_stale_fields"] == ["first_name"]


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
    inbox_apply()
    again = app.post(BATCH, {"events": events[:1]}, format="json").json()
    assert again["results"][0]["status"] == "replayed" and again["replayed"] == 1
    assert again["results"][0]["event"] == body["results"][0]["event"]
    inbox_apply()
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
    assert (data["result"]["data"]["type"], data["result"]["data"]["state"]) == ("food_logged", "queued")
    assert outcome(app, response)["status"] == "applied"
    activity = Activity.objects.get(type="food_logged")
    assert activity.occurred_at.date().isoformat() == "2025-12-28"
    assert activity.properties["external_id"] == "food_12345"
    again = send(app, APP_EVENT, body, key="food_12345_1703808000")
    assert again.json() == data and again["Idempotent-Replayed"] == "true" and Activity.objects.count() == 1


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
        replay = send(app, EVENTS, {"type": "custom", "user": {"external_id": "u-1"}}, key="r0")
        reused = send(app, EVENTS, {"type": "food_logged", "user": {"external_id": "u-1"}}, key="r1")
    assert codes == [202, 202, 429] and other.status_code == 202
    # Over the limit, a key used before is answered as then: a replay, or 422 for another body.
    assert replay.status_code == 202 and replay["Idempotent-Replayed"] == "true"
    assert reused.status_code == 422


@pytest.fixture
def app_user_limit(settings):
    """The app-user limit at 3 a minute, for this test."""
    from django.test import override_settings

    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "app_user": "3/min"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        yield


def test_a_numeric_seed_user_id_is_counted_as_its_text(app, app_user_limit):
    ContactFactory(email=None, external_id="123")
    codes = []
    for n, user_id in enumerate([123, "123", 123, 123]):
        body = {"entityType": "food_log", "operation": "create", "userId": user_id, "payload": {}}
        codes.append(send(app, APP_EVENT, body, key=f"num{n}").status_code)
    assert codes == [202, 202, 202, 429]


def test_a_batch_admits_each_app_users_events_up_to_their_limit(app, app_user_limit):
    """The batch shares the single routes' per-app-user windows (3 a minute here): each user's
    first events that still fit are accepted, the rest refused with when to send them again
    (and not counted, so sending them then gets them in); an event sent before is answered as
    then even when its user is at the limit."""
    from crm_platform.redis import get_redis

    for user in ("u-1", "u-2", "u-3"):
        ContactFactory(email=None, external_id=user)

    def events(tag, users):
        return [{"id": f"{tag}-{n}", "type": "custom", "user": {"external_id": u}} for n, u in enumerate(users)]

    def statuses(body):
        return [r["status"] for r in body["results"]]

    assert app.post(BATCH, {"events": events("a", ["u-1", "u-1", "u-2"])}, format="json").json()["accepted"] == 3
    second = app.post(BATCH, {"events": events("b", ["u-1", "u-2", "u-1"])}, format="json").json()
    assert statuses(second) == ["accepted", "accepted", "rejected"]  # u-1: 1 of 2 still fits
    limited = second["results"][2]
    assert limited["retry_after"] >= 1 and "app user" in limited["errors"]["user"][0]
    assert not InboundEvent.objects.filter(key="event:b-2").exists()
    # The single route counts in the same windows: u-2 has had 2 events, u-1 3.
    assert send(app, EVENTS, {"type": "custom", "user": {"external_id": "u-2"}}, key="u2-single").status_code == 202
    single = send(app, EVENTS, {"type": "custom", "user": {"external_id": "u-1"}}, key="u1-single")
    assert single.status_code == 429 and int(single["Retry-After"]) >= 1
    # A resent batch whose answer was lost: what was queued replays, though u-1 is at its limit.
    again = app.post(BATCH, {"events": events("b", ["u-1", "u-2", "u-1"])}, format="json").json()
    assert statuses(again) == ["replayed", "replayed", "rejected"]

    # More events for one user than the limit: the first 3 go in, and the rest once it has room.
    backlog = events("c", ["u-3"] * 5)
    assert statuses(app.post(BATCH, {"events": backlog}, format="json").json()) == ["accepted"] * 3 + ["rejected"] * 2
    get_redis().delete(*get_redis().keys("rl:app_user:*"))  # as if the client waited retry_after
    assert statuses(app.post(BATCH, {"events": backlog}, format="json").json()) == ["replayed"] * 3 + ["accepted"] * 2
    assert InboundEvent.objects.filter(key__startswith="event:c-").count() == 5


def test_only_the_events_a_batch_queues_count_in_the_app_users_window(app, app_user_limit):
    """Events sent before (replayed) and events refused cost nothing, so they do not use up
    the user's window (3 a minute here): after a batch is sent twice and a refused event, the
    user still has room for the rest."""
    ContactFactory(email=None, external_id="u-1")
    sent = [{"id": f"a-{n}", "type": "custom", "user": {"external_id": "u-1"}} for n in range(2)]
    assert app.post(BATCH, {"events": sent}, format="json").json()["accepted"] == 2
    assert app.post(BATCH, {"events": sent}, format="json").json()["replayed"] == 2
    refused = {"id": "bad", "type": "subscription_cancelled", "user": {"external_id": "u-1"}, "properties": {}}
    assert app.post(BATCH, {"events": [refused]}, format="json").json()["rejected"] == 1
    new = {"id": "b-0", "type": "custom", "user": {"external_id": "u-1"}}
    assert app.post(BATCH, {"events": [new]}, format="json").json()["accepted"] == 1


def test_seed_002_unix_seconds_as_text_and_a_new_users_email(app):
    created = {"entityType": "user", "operation": "create", "userId": "u-9", "payload": {"email": "New@Example.com"}}
    assert send(app, APP_EVENT, created, key="new-u9").status_code == 202
    logged = {"entityType": "food_log", "operation": "create", "userId": "u-9", "payload": {"timestamp": "1703808000"}}
    response = send(app, APP_EVENT, logged, key="food-u9")
    assert response.status_code == 202, response.content
    assert outcome(app, response)["status"] == "applied"
    contact = Contact.objects.get(external_id="u-9")
    assert contact.email == "new@example.com"
    assert Activity.objects.filter(type="food_logged", occurred_at="2023-12-29T00:00:00+00:00").exists()
    compact = {**logged, "payload": {"date": "20250314"}}  # digits, but a date (ISO 8601 basic), not 1970
    response = send(app, APP_EVENT, compact, key="compact-u9")
    assert response.status_code == 202, response.content
    assert outcome(app, response)["status"] == "applied"
    assert Activity.objects.filter(type="food_logged", occurred_at__date="2025-03-14").exists()
    bad = {**created, "userId": "u-10", "payload": {"email": "not an address"}}
    response = send(app, APP_EVENT, bad, key="bad-u10")
    assert response.status_code == 400 and "user.email" in response.json()["error"]["fields"]


def test_seed_002_timestamps_out_of_range_are_400(app):
    body = {"entityType": "food_log", "operation": "create", "userId": "u-1", "payload": {"timestamp": 1e20}}
    ContactFactory(email=None, external_id="u-1")
    response = send(app, APP_EVENT, body, key="huge")
    assert response.status_code == 400 and "payload.timestamp" in response.json()["error"]["fields"]


def test_seed_002_a_number_from_1e11_is_epoch_milliseconds_and_below_it_seconds(app):
    """A JavaScript app sends Date.now(), milliseconds: 1732700000000 was read as seconds (the
    year 56876), a 400. As seconds, 1e11 is the year 5138; as milliseconds, March 1973."""
    ContactFactory(email=None, external_id="u-1")
    stamps = {
        "ms": (1732700000000, "2024-11-27T09:33:20+00:00"),
        "ms-float": (1732700000123.0, "2024-11-27T09:33:20.123+00:00"),
        "ms-in-date": (1732700000000, "2024-11-27T09:33:20+00:00"),  # under `date`, the same rule
        "s": (1732700000, "2024-11-27T09:33:20+00:00"),
        "s-float": (1732700000.5, "2024-11-27T09:33:20.500+00:00"),
        "ms-first": (10**11, "1973-03-03T09:46:40+00:00"),
        "s-last": (10**11 - 10**9, None),  # seconds: the year 5107, ahead of our clock
    }
    for key, (stamp, moment) in stamps.items():
        name = "date" if key == "ms-in-date" else "timestamp"
        body = {"entityType": "food_log", "operation": "create", "userId": "u-1", "payload": {name: stamp}}
        response = send(app, APP_EVENT, body, key=key)
        if moment is None:
            assert response.status_code == 400, response.content
            assert list(response.json()["error"]["fields"]) == ["payload.timestamp"]
            continue
        assert response.status_code == 202, (key, response.content)
        assert outcome(app, response)["status"] == "applied", key
        assert Activity.objects.filter(type="food_logged", occurred_at=moment).exists(), key


@pytest.mark.parametrize("name", ["occurredAt", "timestamp", "date"])
def test_seed_002_digits_as_text_are_read_as_the_number_they_spell(app, name):
    """A JavaScript app stringifies its clock: String(Date.now()) is "1732700000000", which was
    a 400 though the number 1732700000000 is read as epoch milliseconds. Nine to thirteen
    digits now mean what their number would, under each of the three keys (and as a food log's
    `date`, which its schema checks); a compact date's eight digits are still a date."""
    ContactFactory(email=None, external_id="u-1")
    stamps = {
        "1732700000000": "2024-11-27T09:33:20+00:00",  # milliseconds
        "100000000000": "1973-03-03T09:46:40+00:00",  # the first milliseconds, twelve digits
        "1732700000": "2024-11-27T09:33:20+00:00",  # seconds
        "20250314": "2025-03-14T00:00:00+00:00",  # ISO 8601 basic: a date, not 1970
    }
    for n, (stamp, moment) in enumerate(stamps.items()):
        body = {"entityType": "food_log", "operation": "create", "userId": "u-1", "payload": {name: stamp}}
        response = send(app, APP_EVENT, body, key=f"{name}-{n}")
        assert response.status_code == 202, (stamp, response.content)
        assert outcome(app, response)["status"] == "applied", stamp
        assert Activity.objects.filter(type="food_logged", occurred_at=moment).exists(), stamp


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timestamp", True),
        ("timestamp", False),
        ("timestamp", 0),
        ("timestamp", -1732700000000),
        ("timestamp", 253402300800000),  # milliseconds: the year 10000
        ("occurredAt", 1e300),
        ("date", -0.5),
        ("timestamp", [1732700000000]),
        ("timestamp", "17327000000000"),  # fourteen digits: no clock of ours, and no ISO 8601
        ("date", "10000000000"),  # eleven digits: seconds, the year 2286, ahead of our clock
    ],
)
def test_seed_002_a_timestamp_that_is_no_moment_is_400_naming_it(app, name, value):
    ContactFactory(email=None, external_id="u-1")
    body = {"entityType": "activity", "operation": "create", "userId": "u-1", "payload": {name: value}}
    response = send(app, APP_EVENT, body, key="bad-time", apply=False)
    assert response.status_code == 400, response.content
    assert list(response.json()["error"]["fields"]) == [f"payload.{name}"], response.json()
    assert not InboundEvent.objects.exists()


def test_seed_002_a_number_past_a_double_is_400(app):
    """orjson refuses 1e400 (Python would read infinity): the parser's 400, before the route."""
    ContactFactory(email=None, external_id="u-1")
    raw = '{"entityType": "activity", "operation": "create", "userId": "u-1", "payload": {"timestamp": 1e400}}'
    response = app.post(APP_EVENT, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY="inf")
    assert response.status_code == 400 and response.json()["error"]["code"] == "parse_error"
    assert not InboundEvent.objects.exists()


def test_only_a_key_with_events_sources_may_send_as_an_outside_crm(app, key_client):
    """The conflict policy ranks an outside CRM above the app on some fields: a plain app key
    claiming source "crm" is refused (403, nothing written); a connector's key may."""
    ContactFactory(external_id="u-1")
    body = {"type": "user_logged_in", "user": {"external_id": "u-1"}, "source": "crm"}
    refused = send(app, EVENTS, body, key="as-crm", apply=False)
    assert refused.status_code == 403 and "events:sources" in refused.json()["error"]["message"]
    assert not InboundEvent.objects.exists()
    connector = key_client(["events:write", "events:read", "events:sources"], name="crm connector")
    accepted = send(connector, EVENTS, body, key="as-crm")
    assert accepted.status_code == 202, accepted.content
    assert outcome(connector, accepted)["status"] == "applied"
    assert Activity.objects.get(type="user_logged_in").source == "crm"


def test_a_source_refusal_is_logged_and_an_event_answered_before_replays(
    make_key, system_actor, django_capture_on_commit_callbacks
):
    """A connector's key loses events:sources: a retry of an event it sent before is answered
    as then (batch too), a new one is refused, and the refusal is in the sync log."""
    from rest_framework.test import APIClient

    from crm_platform.services import api_key_update

    ContactFactory(external_id="u-1")
    key, raw = make_key(["events:write", "events:sources"], name="crm connector")
    connector = APIClient()
    connector.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    body = {"type": "user_logged_in", "user": {"external_id": "u-1"}, "source": "crm"}
    first = send(connector, EVENTS, body, key="as-crm", apply=False)
    batched = {"id": "b-1", **body}
    assert connector.post(BATCH, {"events": [batched]}, format="json").json()["accepted"] == 1
    with django_capture_on_commit_callbacks(execute=True):  # forgets the cached key
        api_key_update(api_key=key, actor=system_actor, scopes=["events:write"])

    again = send(connector, EVENTS, body, key="as-crm", apply=False)
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert again.json()["event"]["id"] == first.json()["event"]["id"]
    results = connector.post(BATCH, {"events": [batched, {**batched, "id": "b-2"}]}, format="json").json()
    assert [r["status"] for r in results["results"]] == ["replayed", "rejected"]
    assert send(connector, EVENTS, body, key="as-crm-2", apply=False).status_code == 403
    assert SyncEvent.objects.filter(status="failed", last_error__contains="source").count() == 2
