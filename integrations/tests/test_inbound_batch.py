"""The set-based ingest: batches (partial results, replays, repeated ids, stale events, new users,
effectful types mixed in), single events sharing the same path, races, and query bounds.

Requests queue events in the inbox; `batch()` then runs the applier task, as the worker does
after the kick, and reads each event's outcome back from GET /api/v1/events/{id}."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from compliance.models import AuditEvent
from contacts.models import Activity, Contact, LifecycleTransition, Order, Subscription, Ticket
from contacts.tests.factories import ContactFactory
from crm_platform.models import OutboxMessage
from integrations.models import InboundEvent, SyncEvent
from integrations.tasks import inbox_apply
from leads.models import Lead
from tests.support import other_connection, race

pytestmark = pytest.mark.django_db
EVENTS = "/api/v1/events"
BATCH = "/api/v1/events/batch"


def batch(client, events):
    """POST a batch, apply the inbox, and add each queued event's outcome ("outcome": applied or
    failed; "result" or "errors") to its result."""
    response = client.post(BATCH, {"events": events}, format="json")
    assert response.status_code == 202, response.content
    inbox_apply()
    body = response.json()
    for result in body["results"]:
        if "event" in result:
            state = client.get(f"{EVENTS}/{result['event']}").json()
            result.update(outcome=state["status"], result=state["result"], errors=state["errors"])
    return body


def single(client, body, key):
    """POST one event, apply the inbox, and return its outcome."""
    response = client.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 202, response.content
    inbox_apply()
    return client.get(f"{EVENTS}/{response.json()['event']['id']}").json()


def statuses(body):
    return [r["status"] for r in body["results"]]


def test_partial_results_each_event_answered_and_refused_ones_write_nothing(app):
    ContactFactory(email="one@example.com", external_id="u-1")
    ContactFactory(email="two@example.com", external_id="u-2")
    events = [
        {"id": "a", "type": "food_logged", "user": {"external_id": "u-1"}, "properties": {"kcal": 300}},
        {"id": "b", "type": "food_logged", "user": {"external_id": "ghost"}},
        {"id": "c", "type": "custom", "user": {"external_id": "u-1", "email": "two@example.com"}},
        {"id": "d", "type": "order_placed", "user": {"external_id": "u-2"}, "properties": {"amount": "-1"}},
        {
            "id": "e",
            "type": "goal_progress",
            "user": {"email": "TWO@example.com"},
            "occurred_at": "2026-01-02T03:04:05Z",
        },
    ]
    body = batch(app, events)
    assert statuses(body) == ["accepted", "rejected", "rejected", "rejected", "accepted"]
    assert (body["accepted"], body["rejected"], body["replayed"]) == (2, 3, 0)
    errors = [r.get("errors", {}) for r in body["results"]]
    assert "user" in errors[1] and {"email", "external_id"} <= set(errors[2]) and "properties.amount" in errors[3]
    first, last = body["results"][0]["result"], body["results"][4]["result"]
    activity = Activity.objects.get(pk=first["activity"])
    assert (activity.type, activity.contact.external_id, activity.properties) == ("food_logged", "u-1", {"kcal": 300})
    late = Activity.objects.get(pk=last["activity"])
    assert late.contact.email == "two@example.com" and late.occurred_at.isoformat() == "2026-01-02T03:04:05+00:00"
    assert Activity.objects.count() == 2 and not Contact.objects.filter(external_id="ghost").exists()
    # Refused events leave no key behind (a corrected retry may use it) but a failed SyncEvent each.
    assert set(InboundEvent.objects.values_list("key", flat=True)) == {"event:a", "event:e"}
    assert SyncEvent.objects.filter(direction="inbound", status="failed").count() == 2
    assert AuditEvent.objects.filter(action="activity.create").count() == 2


def test_a_batch_sent_again_replays_each_known_id_and_applies_only_the_new_ones(app):
    ContactFactory(email=None, external_id="u-1")
    events = [{"id": f"e{n}", "type": "page_viewed", "user": {"external_id": "u-1"}} for n in range(3)]
    first = batch(app, events)
    again = batch(app, [*events[:2], {"id": "e9", "type": "custom", "user": {"external_id": "u-1"}}])
    assert statuses(again) == ["replayed", "replayed", "accepted"]
    assert again["results"][0]["result"] == first["results"][0]["result"]
    assert Activity.objects.count() == 4 and SyncEvent.objects.filter(direction="inbound").count() == 4
    other_body = batch(app, [{**events[0], "properties": {"path": "/changed"}}])
    assert statuses(other_body) == ["rejected"] and "another body" in str(other_body["results"][0]["errors"])


def test_an_id_repeated_in_one_batch_is_applied_once(app):
    ContactFactory(email=None, external_id="u-1")
    event = {"id": "dup", "type": "food_logged", "user": {"external_id": "u-1"}, "properties": {"kcal": 1}}
    body = batch(app, [event, event, {**event, "properties": {"kcal": 2}}])
    assert statuses(body) == ["accepted", "replayed", "rejected"]
    assert body["results"][1]["result"] == body["results"][0]["result"]
    assert "earlier in this batch" in str(body["results"][2]["errors"])
    assert Activity.objects.count() == 1


def test_stale_logins_land_on_the_timeline_without_moving_the_field(app):
    contact = ContactFactory(email=None, external_id="u-1")
    now = timezone.now().replace(microsecond=0)
    login = {"type": "user_logged_in", "user": {"external_id": "u-1"}}
    body = batch(
        app,
        [
            {**login, "id": "new", "occurred_at": now.isoformat()},
            {**login, "id": "old", "occurred_at": (now - timedelta(hours=2)).isoformat()},
        ],
    )
    assert [r["result"]["stale"] for r in body["results"]] == [[], ["last_login_at"]]
    contact.refresh_from_db()
    assert contact.last_login_at == now and contact.group_timestamps["engagement"]["source"] == "app"
    stale = Activity.objects.get(pk=body["results"][1]["result"]["activity"])
    assert stale.properties["_stale_fields"] == ["last_login_at"]
    assert list(SyncEvent.objects.order_by("id").values_list("status", flat=True)) == ["applied", "skipped_stale"]
    # One contact.updated for the batch, naming the field it changed.
    update = OutboxMessage.objects.get(topic="contact.updated", object_id=str(contact.pk))
    assert update.payload["changed"] == ["last_login_at"] and update.payload["external_id"] == "u-1"
    # A later single event, older still, is stale too.
    old = (now - timedelta(days=1)).isoformat()
    assert single(app, {**login, "occurred_at": old}, "s1")["result"]["stale"] == ["last_login_at"]


def test_new_users_are_created_once_and_unknown_ones_refused_where_the_type_needs_them(app):
    events = [
        {"id": "1", "type": "page_viewed", "user": {"external_id": "new-1"}},
        {"id": "2", "type": "food_logged", "user": {"external_id": "new-1"}},
        {"id": "3", "type": "page_viewed", "user": {"external_id": "new-1", "email": "New@Example.com"}},
        {
            "id": "4",
            "type": "order_placed",
            "user": {"external_id": "new-2"},
            "properties": {"order_id": "o", "amount": "5"},
        },
        {"id": "5", "type": "page_viewed", "user": {"external_id": "new-2"}},
        {"id": "6", "type": "user_logged_in", "user": {"external_id": "new-2"}},
    ]
    body = batch(app, events)
    # The order names new-2 before anything created it: refused, as one event at a time would be.
    assert statuses(body) == ["accepted", "accepted", "accepted", "rejected", "accepted", "accepted"]
    new = Contact.objects.get(external_id="new-1")
    # The identifiers found (and made) the contact; they are not weighed, so stamp nothing.
    assert new.email == "new@example.com" and "identity" not in new.group_timestamps
    assert new.last_active_at is not None
    assert Contact.objects.filter(external_id__startswith="new-").count() == 2
    assert Contact.objects.get(external_id="new-2").last_login_at is not None
    assert OutboxMessage.objects.filter(topic="contact.created").count() == 2
    assert not Order.objects.exists()


def test_a_batch_may_name_users_whose_sign_ups_an_earlier_request_queued(app):
    """Sign-ups still in the inbox vouch for later batches by the identifiers they were sent
    with; an identifier nobody signed up with is refused."""
    queued = [
        {"id": "s1", "type": "account_created", "user": {"external_id": "q-1", "email": "q1@example.com"}},
        {"id": "s2", "type": "page_viewed", "user": {"external_id": "q-2"}},
    ]
    response = app.post(BATCH, {"events": queued}, format="json")
    assert response.json()["accepted"] == 2
    later = [
        {"id": "a", "type": "user_logged_in", "user": {"email": "Q1@example.com"}},
        {"id": "b", "type": "food_logged", "user": {"external_id": "q-1"}},
        {"id": "c", "type": "food_logged", "user": {"external_id": "q-2"}},
        {"id": "d", "type": "food_logged", "user": {"email": "q2@example.com"}},
        {"id": "e", "type": "food_logged", "user": {"external_id": "q-3"}},
    ]
    body = batch(app, later)
    assert statuses(body) == ["accepted", "accepted", "accepted", "rejected", "rejected"]
    assert Activity.objects.filter(contact__external_id="q-1").count() == 3
    # Once applied, the contacts vouch; the inbox rows no longer do (they are not pending).
    again = batch(app, [{"id": "f", "type": "custom", "user": {"external_id": "q-2"}}])
    assert statuses(again) == ["accepted"]


def test_types_with_real_effects_run_in_a_batch_beside_the_timeline(app):
    Subscription.objects.create(contact=ContactFactory(), plan="Core", external_id="nope")  # another user's
    ContactFactory(email=None, external_id="u-1", lifecycle_stage="patient")
    events = [
        {"id": "a", "type": "account_created", "user": {"external_id": "u-9", "email": "nine@example.com"}},
        {"id": "b", "type": "food_logged", "user": {"external_id": "u-9"}},
        {
            "id": "c",
            "type": "order_placed",
            "user": {"external_id": "u-1"},
            "properties": {"order_id": "o1", "amount": "9"},
        },
        {
            "id": "d",
            "type": "subscription_started",
            "user": {"external_id": "u-1"},
            "properties": {"subscription_id": "s1", "plan": "Core"},
        },
        {
            "id": "e",
            "type": "support_ticket_created",
            "user": {"external_id": "u-1"},
            "properties": {"subject": "Help"},
        },
        {
            "id": "f",
            "type": "lead_captured",
            "user": {"email": "lead@example.com"},
            "properties": {"source": "website_form"},
        },
        {
            "id": "g",
            "type": "subscription_cancelled",
            "user": {"external_id": "u-1"},
            "properties": {"subscription_id": "nope"},
        },
    ]
    body = batch(app, events)
    # Checked at the door: the envelope, the schema, the user. No such subscription shows when applied.
    assert statuses(body) == ["accepted"] * 7
    assert [r["outcome"] for r in body["results"]] == ["applied"] * 6 + ["failed"]
    assert "properties.subscription_id" in body["results"][6]["errors"]
    assert Contact.objects.get(external_id="u-9").email == "nine@example.com"
    assert Activity.objects.filter(contact__external_id="u-9").count() == 2  # account_created + food_logged
    assert Order.objects.get(external_id="o1").contact.external_id == "u-1"
    assert Subscription.objects.get(external_id="s1").contact.external_id == "u-1"
    assert Ticket.objects.get().subject == "Help" and Lead.objects.get().source == "website_form"
    assert Contact.objects.get(external_id="u-1").lifecycle_stage == "subscriber"


def test_lifecycle_rules_apply_on_the_timeline_path(app):
    contact = ContactFactory(email=None, external_id="u-1", lifecycle_stage="visitor")
    churned = ContactFactory(email=None, external_id="u-2", lifecycle_stage="churned")
    body = batch(
        app,
        [
            {"id": "a", "type": "consultation_submitted", "user": {"external_id": "u-1"}},
            {"id": "b", "type": "page_viewed", "user": {"external_id": "u-2"}},
        ],
    )
    assert statuses(body) == ["accepted", "accepted"]
    contact.refresh_from_db()
    churned.refresh_from_db()
    assert (contact.lifecycle_stage, churned.lifecycle_stage) == ("prospect", "won_back")
    moves = LifecycleTransition.objects.order_by("id").values_list("to_stage", "reason")
    assert list(moves) == [("prospect", "event consultation_submitted"), ("won_back", "event page_viewed")]


def test_last_active_moves_forward_every_few_minutes_at_most(app):
    long_ago = timezone.now() - timedelta(days=3)
    contact = ContactFactory(email=None, external_id="u-1", last_active_at=long_ago)
    now = timezone.now().replace(microsecond=0) - timedelta(minutes=10)  # "later" must not be in the future
    batch(app, [{"id": "a", "type": "custom", "user": {"external_id": "u-1"}, "occurred_at": now.isoformat()}])
    contact.refresh_from_db()
    assert contact.last_active_at == now
    soon = (now + timedelta(seconds=20)).isoformat()
    batch(app, [{"id": "b", "type": "custom", "user": {"external_id": "u-1"}, "occurred_at": soon}])
    contact.refresh_from_db()
    assert contact.last_active_at == now  # within TOUCH_EVERY: the row is not rewritten
    later = now + timedelta(minutes=6)
    batch(app, [{"id": "c", "type": "custom", "user": {"external_id": "u-1"}, "occurred_at": later.isoformat()}])
    contact.refresh_from_db()
    assert contact.last_active_at == later


def test_an_event_for_a_merged_away_contact_lands_on_the_survivor(app, system_actor):
    from contacts.services import contact_merge

    survivor = ContactFactory(email="keep@example.com", external_id="u-keep")
    loser = ContactFactory(email="gone@example.com", external_id="u-gone")
    contact_merge(survivor=survivor, loser=loser, actor=system_actor)
    body = batch(app, [{"id": "a", "type": "food_logged", "user": {"external_id": "u-gone"}}])
    assert body["results"][0]["result"]["contact"] == survivor.pk


def test_envelopes_of_the_wrong_shape_are_refused_with_field_errors_not_500(app):
    ContactFactory(email=None, external_id="u-1")
    user = {"external_id": "u-1"}
    body = batch(
        app,
        [
            {"id": "a", "type": ["custom"], "user": user},
            {"id": "b", "type": "custom", "source": {"app": 1}, "user": user},
            {"id": "c", "type": "custom", "occurred_at": "2024-02-30T00:00:00Z", "user": user},
            {"id": "d", "type": "custom", "user": user},
        ],
    )
    assert statuses(body) == ["rejected", "rejected", "rejected", "accepted"]
    assert [sorted(r["errors"]) for r in body["results"][:3]] == [["type"], ["source"], ["occurred_at"]]
    single = app.post(
        EVENTS,
        {"type": "custom", "occurred_at": "2024-02-30T00:00:00Z", "user": user},
        format="json",
        HTTP_IDEMPOTENCY_KEY="bad-date",
    )
    assert single.status_code == 400 and "occurred_at" in single.json()["error"]["fields"]


def test_the_hot_paths_take_a_bounded_number_of_queries(app):
    ContactFactory(email=None, external_id="u-0")
    for n in range(1, 200):
        ContactFactory(email=None, external_id=f"u-{n}")

    def events(count, tag):
        kinds = ["food_logged", "page_viewed", "user_logged_in", "goal_progress"]
        return [
            {"id": f"{tag}{n}", "type": kinds[n % 4], "user": {"external_id": f"u-{n}"}, "properties": {"n": n}}
            for n in range(count)
        ]

    ContactFactory(email="known@example.com", external_id="u-known")
    single(app, {"type": "custom", "user": {"external_id": "u-0"}}, "warm")
    # The request is one INSERT (the API key is cached) carrying the user check: a known user,
    # or, for a sign-up-capable type, a newcomer whose identifier is not suppressed.
    cases = [
        ("food_logged", {"external_id": "u-1"}, False),
        ("page_viewed", {"email": "known@example.com"}, True),
        ("page_viewed", {"external_id": "brand-new"}, True),
    ]
    for n, (kind, user, creates_user) in enumerate(cases):
        with CaptureQueriesContext(connection) as request:
            response = app.post(EVENTS, {"type": kind, "user": user}, format="json", HTTP_IDEMPOTENCY_KEY=f"q{n}")
        assert response.status_code == 202, response.content
        assert len(_statements(request)) == 1, (kind, user, _statements(request))
        assert InboundEvent.objects.get(key=f"q{n}").creates_user is creates_user
    inbox_apply()
    assert Contact.objects.filter(external_id="brand-new").exists()

    def applied(count, tag):
        with CaptureQueriesContext(connection) as posted:
            response = app.post(BATCH, {"events": events(count, tag)}, format="json")
        assert response.json()["accepted"] == count
        with CaptureQueriesContext(connection) as applying:
            assert inbox_apply()["applied"] == count
        return _statements(posted), _statements(applying)

    applied(1, "w")  # the first batch of a process reads the lifecycle rules
    small, large = applied(10, "s"), applied(200, "l")
    # However many events: the request checks users and queues in 2 statements; the applier's
    # lock, claim, lookup, hold (the named contacts, against merges and erasures), rules, touch,
    # activities, audit, sync events, outbox, marks, and its last look (lock, claim) once the
    # kick flag is cleared, stay fixed.
    assert len(large[0]) == len(small[0]) == 2
    assert len(large[1]) == len(small[1]) <= 17, large[1]


@pytest.mark.parametrize("enabled", [True, False])
def test_the_inbox_statements_are_prepared_and_nothing_else(transactional_db, app, settings, enabled):
    """With DB_PREPARED_STATEMENTS the inbox's hot statements are prepared on the connection at
    first use (PostgreSQL stops parsing and planning them per request); nothing else is, and
    psycopg's preparing is off again between them, so it counts no client-side query's text."""
    settings.DB_PREPARED_STATEMENTS = enabled
    connection.close()  # a session of its own: pg_prepared_statements is per session
    for n in range(3):
        ContactFactory(email=None, external_id=f"p-{n}")
    for n in range(3):
        response = app.post(
            EVENTS,
            {"type": "food_logged", "user": {"external_id": f"p-{n}"}},
            format="json",
            HTTP_IDEMPOTENCY_KEY=f"prep{n}",
        )
        assert response.status_code == 202, response.content
        events = [{"id": f"prep{n}-{i}", "type": "food_logged", "user": {"external_id": "p-1"}} for i in range(2)]
        assert app.post(BATCH, {"events": events}, format="json").json()["accepted"] == 2
    assert connection.connection.prepare_threshold is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in cursor.fetchall()]
    if not enabled:
        assert statements == []
        return
    inbox = [s for s in statements if s.startswith("INSERT INTO integrations_inboundevent")]
    assert any("WHERE EXISTS" in s for s in inbox), statements  # the single event's INSERT with its check
    assert any("ROWS FROM" in s for s in inbox), statements  # the batch's
    assert all(s.startswith(("INSERT INTO integrations_inboundevent", "WITH e AS")) for s in statements), statements


def test_a_column_type_changed_under_the_prepared_statements_fails_no_request(transactional_db, app):
    """A migration widening columns the inbox's prepared statements return (the inbox key, the
    contacts' app user id) while the web workers run: PostgreSQL refuses each statement once on
    every connection that prepared it ("cached plan must not change result type"); it is sent
    again, so no request fails and nothing is written twice."""
    connection.close()
    ContactFactory(email=None, external_id="w-1")

    def post(tag: str) -> None:
        events = [{"id": f"{tag}-{i}", "type": "food_logged", "user": {"external_id": "w-1"}} for i in range(2)]
        response = app.post(BATCH, {"events": events}, format="json")
        assert response.status_code == 202, response.content
        assert response.json()["accepted"] == 2

    post("before")  # prepares the user check and the INSERT on this connection
    widened = []
    with other_connection(autocommit=True) as other:  # the migrations' own connection
        try:  # one column a statement returns at a time: the INSERT's, then the user check's
            for table, column, length in [
                ("integrations_inboundevent", "key", 200),
                ("contacts_contact", "external_id", 128),
            ]:
                other.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar({length + 1})")
                widened.append((table, column, length))
                post(column)
        finally:
            for table, column, length in widened:
                other.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar({length})")
    assert InboundEvent.objects.count() == 6


def _statements(captured) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]


def test_two_identical_batches_racing_apply_each_event_once(transactional_db, make_key):
    ContactFactory(email=None, external_id="u-1")
    _, raw = make_key(["events:write"])
    events = [{"id": f"r{n}", "type": "food_logged", "user": {"external_id": "u-1"}} for n in range(20)]

    def send(n):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return client.post(BATCH, {"events": events}, format="json").json()

    answers = race(4, send)
    assert inbox_apply()["applied"] == 20
    assert Activity.objects.count() == 20
    assert sorted(a["accepted"] for a in answers) == [0, 0, 0, 20]
    assert all(a["replayed"] == 20 for a in answers if not a["accepted"])


def test_two_identical_single_events_racing_make_one_activity(transactional_db, make_key):
    ContactFactory(email=None, external_id="u-1")
    _, raw = make_key(["events:write"])

    def send(n):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        response = client.post(
            EVENTS, {"type": "custom", "user": {"external_id": "u-1"}}, format="json", HTTP_IDEMPOTENCY_KEY="race"
        )
        return response.status_code, response.get("Idempotent-Replayed")

    answers = race(4, send)
    assert inbox_apply()["applied"] == 1
    assert Activity.objects.count() == 1
    assert sorted(answers, key=lambda a: a[1] or "") == [(202, None), (202, "true"), (202, "true"), (202, "true")]


def test_unusual_envelopes_get_the_serializers_words(app):
    ContactFactory(email=None, external_id="u-1")
    cases = [
        ({"type": "custom", "user": {"external_id": "u-1"}, "occurred_at": "yesterday"}, "occurred_at"),
        ({"type": "custom", "user": {"external_id": "u-1"}, "properties": "x"}, "properties"),
        ({"type": "custom", "user": {"email": "not-an-email"}}, "user.email"),
        ({"type": "custom", "user": {"external_id": "u-1"}, "source": "fax"}, "source"),
    ]
    for n, (body, field) in enumerate(cases):
        response = app.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY=f"u{n}")
        assert response.status_code == 400 and field in response.json()["error"]["fields"], (body, response.content)
    naive = {"type": "custom", "user": {"external_id": " u-1 "}, "occurred_at": "2026-01-02T03:04:05"}
    response = app.post(EVENTS, naive, format="json", HTTP_IDEMPOTENCY_KEY="naive")
    assert response.status_code == 202, response.content  # trimmed id, the default time zone: as DRF reads them


def test_single_event_keys_replay_refuse_another_body_and_outlive_the_user(app):
    contact = ContactFactory(email=None, external_id="u-1")
    body = {"type": "custom", "user": {"external_id": "u-1"}, "properties": {"a": 1}}
    first = app.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    other = app.post(EVENTS, {**body, "properties": {"a": 2}}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert first.status_code == 202 and other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    contact.delete()  # the event would be refused now (unknown user): the stored answer still replays
    again = app.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert not SyncEvent.objects.filter(status="failed").exists()


def test_identifiers_of_contacts_merged_in_a_chain_name_one_person(app, system_actor):
    """A merged into B, then B into C: A's email and C's user id are the same person."""
    from contacts.services import contact_merge

    a = ContactFactory(email="a@example.com", external_id="u-a")
    b = ContactFactory(email="b@example.com", external_id="u-b")
    c = ContactFactory(email="c@example.com", external_id="u-c")
    contact_merge(survivor=b, loser=a, actor=system_actor)
    contact_merge(survivor=c, loser=b, actor=system_actor)
    body = batch(app, [{"id": "m", "type": "custom", "user": {"email": "a@example.com", "external_id": "u-c"}}])
    assert statuses(body) == ["accepted"] and body["results"][0]["result"]["contact"] == c.pk
    ContactFactory(email="d@example.com", external_id="u-d")
    refused = batch(app, [{"id": "n", "type": "custom", "user": {"email": "a@example.com", "external_id": "u-d"}}])
    assert statuses(refused) == ["rejected"] and {"email", "external_id"} <= set(refused["results"][0]["errors"])


def test_an_identifier_an_event_fills_in_is_written_under_the_policy_not_as_a_staff_edit(app, system_actor):
    """A login naming a contact's app user id and an email it lacks adds the email as the app
    wrote it then (contact_sync): an event older than the identity group's last write fills
    the gap without moving that group's stamp, and is never recorded as a staff edit made now."""
    from contacts.services import contact_create

    contact_create(actor=system_actor, external_id="fill-1", first_name="Fill")  # identity stamped now, by staff
    recent = {"id": "fill-recent", "type": "user_logged_in", "user": {"external_id": "fill-1"}}
    assert batch(app, [recent])["results"][0]["outcome"] == "applied"  # engagement stamped now too
    before = Contact.objects.get(external_id="fill-1").group_timestamps["identity"]
    at = timezone.now() - timedelta(hours=3)
    login = {
        "id": "fill-login",
        "type": "user_logged_in",
        "occurred_at": at.isoformat(),
        "user": {"external_id": "fill-1", "email": "Fill@Example.com"},
    }
    body = batch(app, [login])
    assert body["results"][0]["outcome"] == "applied", body
    contact = Contact.objects.get(external_id="fill-1")
    assert contact.email == "fill@example.com"
    assert contact.group_timestamps["identity"] == before


def test_a_lead_captured_by_an_event_is_written_as_the_app_then_not_as_staff_now(app):
    """lead_captured from the app writes the contact under the conflict policy as the app at
    the event's time: an app event after it (here in the same batch, 30 s later) still updates
    the profile, and a capture naming no name leaves the name alone."""
    now = timezone.now()
    events = [
        {
            "id": "lead-1",
            "type": "lead_captured",
            "user": {"email": "ann@example.com"},
            "occurred_at": (now - timedelta(seconds=60)).isoformat(),
            "properties": {"first_name": "Ann", "source": "api"},
        },
        {
            "id": "acct-1",
            "type": "account_created",
            "user": {"email": "ann@example.com", "external_id": "u-ann"},
            "occurred_at": (now - timedelta(seconds=30)).isoformat(),
            "properties": {"first_name": "Annabel", "phone": "+14155550100"},
        },
        {
            "id": "lead-2",
            "type": "lead_captured",
            "user": {"email": "ann@example.com"},
            "occurred_at": (now - timedelta(seconds=10)).isoformat(),
        },
    ]
    body = batch(app, events)
    assert [r["outcome"] for r in body["results"]] == ["applied"] * 3, body
    assert body["results"][1]["result"]["stale"] == []
    contact = Contact.objects.get(email="ann@example.com")
    assert (contact.first_name, contact.phone, contact.external_id) == ("Annabel", "+14155550100", "u-ann")
    assert all(stamp["source"] == "app" for stamp in contact.group_timestamps.values()), contact.group_timestamps


def test_an_event_sent_as_another_source_without_events_sources_is_rejected_alone(app, key_client):
    ContactFactory(external_id="u-1")
    events = [
        {"id": "a", "type": "custom", "user": {"external_id": "u-1"}},
        {"id": "b", "type": "custom", "user": {"external_id": "u-1"}, "source": "marketing"},
    ]
    body = batch(app, events)
    assert statuses(body) == ["accepted", "rejected"]
    assert "events:sources" in body["results"][1]["errors"]["source"][0]
    assert InboundEvent.objects.count() == 1
    connector = key_client(["events:write", "events:read", "events:sources"], name="marketing connector")
    assert statuses(batch(connector, [{**events[1], "id": "c"}])) == ["accepted"]
