"""Every event type declares its properties (integrations/properties.py): a declared name with a
wrong value is refused at the door with its path, whatever the route; other names pass as sent."""

import io

import pytest

from compliance.suppression import digest
from contacts.models import Activity
from contacts.tests.factories import ContactFactory
from integrations.inbound import EVENT_TYPES
from integrations.models import InboundEvent
from integrations.properties import Properties, Serialized
from integrations.tasks import inbox_apply
from integrations.tests.test_inbound import APP_EVENT, BATCH, EVENTS

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _known_user(db):
    ContactFactory(external_id="u-1")


def test_every_type_declares_a_schema():
    for name, kind in EVENT_TYPES.items():
        assert isinstance(kind.schema, Properties | Serialized), name
        if kind.handler is None:  # the timeline types: the cheap checks, and some names declared
            assert isinstance(kind.schema, Properties) and kind.schema.checks, name


def test_each_declared_name_refuses_a_wrong_value_alone_in_a_batch(app):
    """One event per (type, declared name) with an object where the name wants something else
    (a string where it wants an object): each is rejected with exactly its own path."""
    events, expected = [], {}
    for kind_name, kind in EVENT_TYPES.items():
        if not isinstance(kind.schema, Properties):
            continue
        for name, check in kind.schema.checks.items():
            wrong = "not-a-map" if check({}) is None else {"not": "this"}
            event_id = f"{kind_name}.{name}"
            events.append(
                {"id": event_id, "type": kind_name, "user": {"external_id": "u-1"}, "properties": {name: wrong}}
            )
            expected[event_id] = f"properties.{name}"
    body = app.post(BATCH, {"events": events}, format="json").json()
    assert body["rejected"] == len(events) and body["accepted"] == 0
    for result in body["results"]:
        assert list(result["errors"]) == [expected[result["id"]]], result
    assert not InboundEvent.objects.exists()


@pytest.mark.parametrize(
    ("kind", "properties", "path", "message"),
    [
        ("food_logged", {"calories": "lots"}, "properties.calories", "A number from 0 to 20000."),
        ("food_logged", {"calories": -5}, "properties.calories", "A number from 0 to 20000."),
        ("food_logged", {"date": "2025-02-30"}, "properties.date", None),
        ("goal_progress", {"progress_pct": 150}, "properties.progress_pct", "A number from 0 to 100."),
        ("goal_progress", {"goal_type": "karma"}, "properties.goal_type", None),
        ("review_left", {"rating": 6}, "properties.rating", "A number from 1 to 5."),
        ("review_left", {"rating": True}, "properties.rating", "A number from 1 to 5."),
        ("onboarding_completed", {"steps_completed": "--5"}, "properties.steps_completed", None),
        ("onboarding_completed", {"steps_completed": "\u00b2"}, "properties.steps_completed", None),
        ("goal_progress", {"streak_days": "9" * 5000}, "properties.streak_days", None),
        ("food_logged", {"date": True}, "properties.date", None),
        ("page_viewed", {"path": "/" + "x" * 2048}, "properties.path", "A string of at most 2048 characters."),
        ("referral_made", {"referred_email": "nobody"}, "properties.referred_email", "An email address."),
        ("custom", {"name": 42}, "properties.name", "A string of at most 100 characters."),
    ],
)
def test_a_wrong_property_is_a_400_naming_it_and_nothing_is_written(app, kind, properties, path, message):
    body = {"type": kind, "user": {"external_id": "u-1"}, "properties": properties}
    response = app.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert response.status_code == 400, response.content
    fields = response.json()["error"]["fields"]
    assert list(fields) == [path] and (message is None or fields[path] == [message])
    assert not InboundEvent.objects.exists()


def test_seed_002s_food_log_passes_its_properties_as_sent_and_a_bad_one_is_refused(app):
    payload = {"food_name": "Grilled Chicken", "calories": 450, "protein": 45, "carbs": 50, "fat": 12}
    body = {
        "entityType": "food_log",
        "operation": "create",
        "userId": "u-1",
        "payload": {**payload, "date": "2025-12-28"},
    }
    assert app.post(APP_EVENT, body, format="json", HTTP_IDEMPOTENCY_KEY="food-1").status_code == 202
    inbox_apply()
    activity = Activity.objects.get(type="food_logged")
    assert {name: activity.properties[name] for name in payload} == payload
    bad = {**body, "payload": {**payload, "protein": "a lot"}}
    refused = app.post(APP_EVENT, bad, format="json", HTTP_IDEMPOTENCY_KEY="food-2")
    assert refused.status_code == 400 and list(refused.json()["error"]["fields"]) == ["properties.protein"]


def test_a_malformed_whole_number_is_rejected_alone_in_a_batch(app):
    """ "--5" and "\u00b2" look like digits to str.isdigit(); int() refused them with a 500 that
    lost the whole batch."""
    events = [
        {"id": "bad", "type": "review_left", "user": {"external_id": "u-1"}, "properties": {"rating": 5}},
        {"id": "odd", "type": "goal_progress", "user": {"external_id": "u-1"}, "properties": {"streak_days": "--5"}},
    ]
    body = app.post(BATCH, {"events": events}, format="json").json()
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert list(body["results"][1]["errors"]) == ["properties.streak_days"]


@pytest.mark.parametrize("date", [1703808000, "1703808000", "2025-12-28", "2025-12-28T08:00:00Z"])
def test_seed_002s_food_log_date_passes_in_every_form_the_route_reads_as_its_time(app, date):
    body = {"entityType": "food_log", "operation": "create", "userId": "u-1", "payload": {"calories": 1, "date": date}}
    assert app.post(APP_EVENT, body, format="json", HTTP_IDEMPOTENCY_KEY="d-1").status_code == 202


def test_undeclared_names_nulls_blanks_and_numbers_as_strings_pass(app):
    properties = {
        "calories": "420.5",
        "protein": None,
        "date": "",
        "meal": "Lunch",
        "brand": {"any": ["shape"]},
        "kcal": 300,
    }
    body = {"type": "food_logged", "user": {"external_id": "u-1"}, "properties": properties}
    response = app.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert response.status_code == 202, response.content
    inbox_apply()
    assert Activity.objects.get(type="food_logged").properties == properties


FRIEND = "Friend.Referred@Example.com"


@pytest.mark.parametrize("route", ["event", "batch"])
def test_a_referred_friends_email_is_kept_only_as_its_keyed_hash_from_the_door_on(app, route):
    """The friend is someone else: their address may sit neither in the inbox nor on the
    referrer's timeline (compliance/tests/test_erasure.py erases the friend)."""
    properties = {"referred_email": FRIEND, "referral_code": "R-1", "channel": "sms"}
    event = {"type": "referral_made", "user": {"external_id": "u-1"}, "properties": properties}
    if route == "event":
        response = app.post(EVENTS, event, format="json", HTTP_IDEMPOTENCY_KEY="r-1")
    else:
        response = app.post(BATCH, {"events": [{"id": "r-1", **event}]}, format="json")
    assert response.status_code in (200, 202), response.content
    kept = {"referred_email_digest": digest("email", FRIEND.lower()), "referral_code": "R-1", "channel": "sms"}
    assert InboundEvent.objects.get().payload["properties"] == kept
    inbox_apply()
    assert Activity.objects.get(type="referral_made").properties == kept


def test_timeline_pseudonymise_rewrites_referrals_written_before(system_actor):
    from django.core.management import call_command

    from contacts import services as contacts

    contact = ContactFactory()
    old = contacts.activity_record(
        contact=contact, type="referral_made", actor=system_actor, properties={"referred_email": FRIEND, "channel": "x"}
    )
    other = contacts.activity_record(
        contact=contact, type="custom", actor=system_actor, properties={"referred_email": FRIEND}
    )
    out = io.StringIO()
    call_command("timeline_pseudonymise", "--batch-size", "1", stdout=out)
    assert "1 timeline entry rewritten" in out.getvalue()
    old.refresh_from_db()
    assert old.properties == {"referred_email_digest": digest("email", FRIEND.lower()), "channel": "x"}
    assert Activity.objects.get(pk=other.pk).properties == {"referred_email": FRIEND}  # not a declared name there
    call_command("timeline_pseudonymise", stdout=out)
    assert out.getvalue().endswith("done: 0 timeline entries rewritten.\n")


def test_timeline_pseudonymise_reports_progress_after_each_batch(system_actor):
    """A run over a big timeline printed nothing until it ended."""
    from django.core.management import call_command

    from contacts import services as contacts

    contact = ContactFactory()
    for _ in range(2):
        contacts.activity_record(
            contact=contact, type="referral_made", actor=system_actor, properties={"referred_email": FRIEND}
        )
    out = io.StringIO()
    call_command("timeline_pseudonymise", "--batch-size", "1", stdout=out)
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines[:2]] == ["1 rewritten so far", "2 rewritten so far"]
    assert lines[2] == "done: 2 timeline entries rewritten."
