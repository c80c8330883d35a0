"""The inbox: the kick, the applier (order, batches, a row that breaks its batch), the broker
down, retention and the admin."""

import datetime as dt
import hashlib
import json

import pytest
import redis
from django.contrib.auth.models import Permission
from django.utils import timezone

from compliance.models import AuditEvent
from compliance.tasks import retention_purge
from contacts.models import Activity, Contact, Subscription
from contacts.tests.factories import ContactFactory
from integrations.inbox import KICK_FLAG
from integrations.models import InboundEvent
from integrations.tasks import inbox_apply
from integrations.tests.test_worker import own_broker  # noqa: F401 - a fixture
from tests.support import celery_worker, index_plans, wait_until

EVENTS = "/api/v1/events"


def post(client, body, key):
    return client.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def _queued(broker_url: str, queue: str = "sync") -> list[str]:
    """Task names waiting in a queue of a Redis broker (kombu keeps each queue as a list)."""
    messages = redis.Redis.from_url(broker_url).lrange(queue, 0, -1)
    return [json.loads(m)["headers"]["task"] for m in messages]


def test_one_kick_is_sent_until_the_applier_takes_a_batch(transactional_db, key_client, own_broker):  # noqa: F811
    from crm_platform.redis import get_redis

    app = key_client(["events:write"])
    ContactFactory(email=None, external_id="u-1")
    for n in range(3):  # autocommit: each request commits, and its on-commit kick runs at once
        assert post(app, {"type": "custom", "user": {"external_id": "u-1"}}, f"k{n}").status_code == 202
    assert _queued(own_broker.url) == ["integrations.tasks.inbox_apply"]
    assert inbox_apply() == {"applied": 3, "failed": 0, "batches": 1}
    assert not get_redis().exists(KICK_FLAG)
    post(app, {"type": "custom", "user": {"external_id": "u-1"}}, "k9")  # after the applier looked: a new kick
    assert _queued(own_broker.url) == ["integrations.tasks.inbox_apply"] * 2


@pytest.mark.integration
def test_events_are_accepted_with_the_broker_down_and_applied_once_it_is_back(
    transactional_db,
    key_client,
    own_broker,  # noqa: F811
    caplog,
):
    app = key_client(["events:write"])
    own_broker.stop()
    ContactFactory(email=None, external_id="u-1")
    answers = [post(app, {"type": "food_logged", "user": {"external_id": "u-1"}}, f"k{n}") for n in range(3)]
    assert [a.status_code for a in answers] == [202] * 3
    assert "inbox apply kick not sent" in caplog.text
    assert InboundEvent.objects.filter(status="pending").count() == 3 and not Activity.objects.exists()

    own_broker.start()
    with celery_worker(broker_url=own_broker.url) as queue:
        inbox_apply.apply_async(queue=queue, expires=30)  # what beat's sweep does every few seconds
        wait_until(lambda: Activity.objects.filter(type="food_logged").count() == 3, timeout=60)
    assert set(InboundEvent.objects.values_list("status", flat=True)) == {"applied"}


@pytest.mark.django_db
def test_rows_apply_in_the_order_accepted_a_batch_at_a_time(key_client):
    from integrations.inbox import inbox_apply as apply_rows

    app = key_client(["events:write"])
    post(app, {"type": "account_created", "user": {"external_id": "u-5"}}, "a")
    for n in range(4):
        post(app, {"type": "custom", "user": {"external_id": "u-5"}, "properties": {"n": n}}, f"c{n}")
    assert apply_rows(batch=2) == {"applied": 5, "failed": 0, "batches": 3}
    contact = Contact.objects.get(external_id="u-5")
    steps = Activity.objects.filter(contact=contact).order_by("id").values_list("type", "properties")
    assert [(t, p.get("n")) for t, p in steps] == [("account_created", None)] + [("custom", n) for n in range(4)]


@pytest.mark.django_db
def test_a_row_that_breaks_its_batch_fails_alone_and_the_others_apply(key_client, caplog):
    app = key_client(["events:write", "events:read"])
    ContactFactory(email=None, external_id="u-1")
    ids = [
        post(app, {"type": "custom", "user": {"external_id": "u-1"}}, f"k{n}").json()["event"]["id"] for n in range(3)
    ]
    InboundEvent.objects.filter(pk=ids[1]).update(actor=["robot", "1", "", None])  # a row nobody can apply
    assert inbox_apply() == {"applied": 2, "failed": 1, "batches": 1}
    broken = app.get(f"{EVENTS}/{ids[1]}").json()
    assert broken["status"] == "failed" and "Internal error (ValueError)" in str(broken["errors"])
    assert "applying them one at a time" in caplog.text
    assert Activity.objects.count() == 2


@pytest.mark.django_db
def test_a_stored_payload_that_no_longer_reads_fails_alone(key_client, caplog):
    """The applier reads payloads as text: none at all, or one with a number orjson cannot read
    (beyond a double, as an older version or a hand edit could leave), fails its own row with
    its reason, without taking the batch down the one-at-a-time path; the other rows apply."""
    from django.db import connection

    from integrations.inbox import UNREADABLE

    app = key_client(["events:write", "events:read"])
    ContactFactory(email=None, external_id="u-1")
    ids = [
        post(app, {"type": "custom", "user": {"external_id": "u-1"}}, f"k{n}").json()["event"]["id"] for n in range(3)
    ]
    InboundEvent.objects.filter(pk=ids[0]).update(payload=None)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE integrations_inboundevent SET payload = jsonb_set(payload, '{properties}', "
            "('{\"reading\": 1' || repeat('0', 400) || '}')::jsonb) WHERE id = %s",
            [ids[1]],
        )
    assert inbox_apply() == {"applied": 1, "failed": 2, "batches": 1}
    for pk in ids[:2]:
        assert app.get(f"{EVENTS}/{pk}").json()["errors"] == {"non_field_errors": [UNREADABLE]}
    assert app.get(f"{EVENTS}/{ids[2]}").json()["status"] == "applied"
    assert "one at a time" not in caplog.text


@pytest.mark.django_db
def test_rows_that_fail_outside_the_ingest_are_still_in_the_sync_log(key_client):
    """The sync log records how every inbound event ended. A row failing before events_ingest
    (its stored payload no longer reads) or inside it with an internal error (rolled back to
    its savepoint, sync row and all) was failed in the inbox and absent from the log. Found by
    a review."""
    from integrations.models import SyncEvent

    app = key_client(["events:write", "events:read"])
    ContactFactory(email=None, external_id="u-1")
    ids = [
        post(app, {"type": "custom", "user": {"external_id": "u-1"}}, f"k{n}").json()["event"]["id"] for n in range(3)
    ]
    InboundEvent.objects.filter(pk=ids[0]).update(payload=None)  # unreadable
    InboundEvent.objects.filter(pk=ids[1]).update(actor=["robot", "1", "", None])  # an internal error
    assert inbox_apply() == {"applied": 1, "failed": 2, "batches": 1}
    logged = SyncEvent.objects.filter(direction="inbound").order_by("id")
    assert sorted(logged.values_list("status", flat=True)) == ["applied", "failed", "failed"]
    failed = logged.filter(status="failed")
    assert set(failed.values_list("last_error", flat=True)) == {"ValidationError: non_field_errors", "ValueError"}
    assert all(row.event_type == "custom" and row.payload_digest for row in failed)


@pytest.mark.django_db
def test_retention_purges_applied_and_failed_rows_and_keeps_queued_ones(key_client, settings):
    app = key_client(["events:write"])
    ContactFactory(email=None, external_id="u-1")
    for n in range(3):
        post(app, {"type": "custom", "user": {"external_id": "u-1"}}, f"k{n}")
    inbox_apply()
    post(app, {"type": "custom", "user": {"external_id": "u-1"}}, "queued")
    old = timezone.now() - dt.timedelta(days=settings.IDEMPOTENCY_TTL_DAYS + 1)
    InboundEvent.objects.update(received_at=old)
    InboundEvent.objects.filter(key="k2").update(received_at=timezone.now())
    report = retention_purge()
    assert report["integrations.inboundevent"] == 2
    assert sorted(InboundEvent.objects.values_list("key", "status")) == [("k2", "applied"), ("queued", "pending")]


@pytest.mark.django_db
def test_the_admin_lists_filters_hides_payloads_from_non_phi_staff_and_applies_again(
    key_client, client, staff_user, admin_client
):
    app = key_client(["events:write"])
    ContactFactory(email=None, external_id="u-1")
    Subscription.objects.create(contact=ContactFactory(), plan="Core", external_id="s-404")  # another user's
    post(
        app,
        {"type": "subscription_cancelled", "user": {"external_id": "u-1"}, "properties": {"subscription_id": "s-404"}},
        "cancel",
    )
    inbox_apply()
    row = InboundEvent.objects.get()
    url = "/admin/integrations/inboundevent/"
    found = ({}, {"status": "failed"}, {"type": "subscription_cancelled"}, {"route": "event"}, {"q": "cancel"})
    searches = ({"q": str(row.pk)}, {"q": " u-1 "})
    for query in (*found, *searches):
        page = admin_client.get(url, query)
        assert page.status_code == 200 and page.context["cl"].result_count == 1, query
    for query in ({"q": str(row.pk + 1)}, {"q": "9" * 30}):
        assert admin_client.get(url, query).context["cl"].result_count == 0, query
    assert b"properties.subscription_id" in admin_client.get(url).content  # the errors column

    staff_user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_inboundevent", "change_inboundevent"])
    )
    client.force_login(staff_user)
    detail = client.get(f"{url}{row.pk}/change/")
    assert detail.status_code == 200 and b"s-404" not in detail.content  # no PHI permission: no payload
    assert not AuditEvent.objects.filter(action="phi.read", object_id=str(row.pk)).exists()
    assert b"s-404" in admin_client.get(f"{url}{row.pk}/change/").content
    assert AuditEvent.objects.filter(action="phi.read", object_id=str(row.pk)).exists()  # the view is audited

    response = client.post(url, {"action": "apply_again", "_selected_action": [row.pk]}, follow=True)
    assert b"1 failed event(s) queued to be applied again" in response.content
    row.refresh_from_db()
    assert row.status == "pending" and row.result is None
    assert AuditEvent.objects.filter(action="inbox.retry", object_id=str(row.pk)).exists()


def test_a_process_that_saw_the_flag_skips_redis_for_the_linger(
    transactional_db,
    key_client,
    own_broker,  # noqa: F811
    settings,
):
    from crm_platform.redis import get_redis
    from integrations import inbox

    settings.INBOX_APPLY_LINGER_MS = 1000
    app = key_client(["events:write"])
    ContactFactory(email=None, external_id="u-1")
    post(app, {"type": "custom", "user": {"external_id": "u-1"}}, "k1")
    get_redis().delete(KICK_FLAG)  # as if the applier had just cleared it
    post(app, {"type": "custom", "user": {"external_id": "u-1"}}, "k2")  # remembered: no Redis, no kick
    assert _queued(own_broker.url) == ["integrations.tasks.inbox_apply"]
    # The applier, having cleared the flag, waits the linger before its last look: k2 is applied.
    assert inbox_apply() == {"applied": 2, "failed": 0, "batches": 1}
    inbox._flag_seen_until = 0.0  # the linger is over
    post(app, {"type": "custom", "user": {"external_id": "u-1"}}, "k3")
    assert _queued(own_broker.url) == ["integrations.tasks.inbox_apply"] * 2


@pytest.mark.django_db
def test_one_applier_at_a_time_another_returns_at_once(key_client):
    from django.db import DEFAULT_DB_ALIAS, connections

    from integrations.inbox import _lock, _unlock

    app = key_client(["events:write"])
    ContactFactory(email=None, external_id="u-1")
    post(app, {"type": "custom", "user": {"external_id": "u-1"}}, "k1")
    other = connections.create_connection(DEFAULT_DB_ALIAS)  # another worker's applier
    try:
        assert _lock(other)
        assert inbox_apply() == {"applied": 0, "failed": 0, "batches": 0}
        assert InboundEvent.objects.get().status == "pending"
        _unlock(other)
        assert inbox_apply() == {"applied": 1, "failed": 0, "batches": 1}
    finally:
        other.close()


@pytest.mark.django_db
def test_keys_the_event_routes_stored_before_the_inbox_still_replay(make_key):
    """Migration 0006 moves them into the inbox: a retry after the upgrade is not applied again."""
    import importlib

    from django.db import connection
    from rest_framework.test import APIClient

    from crm_platform.models import IdempotencyRecord

    key, raw = make_key(["events:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    ContactFactory(email=None, external_id="u-1")
    body = {"type": "custom", "user": {"external_id": "u-1"}}
    # What the route kept before (crm_platform.idempotency.request_fingerprint: method, path, body).
    fingerprint = hashlib.sha256(b"POST /api/v1/events\n" + json.dumps(body).encode()).hexdigest()
    old = {"status": "accepted", "result": {"contact": 1, "activity": 7, "stale": []}, "type": "custom"}
    table = IdempotencyRecord._meta.db_table
    with connection.cursor() as cursor:
        # The records as they were then: plain jsonb (crm_platform 0007 encrypted them later; this
        # DDL is rolled back with the test).
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN response_body TYPE jsonb USING NULL")
        for key_name, request_hash, status, stored in (
            ("old-key", fingerprint, 202, old),
            ("contact-key", "x", 201, {"id": 5, "email": "a@example.com"}),  # another route's: stays
        ):
            cursor.execute(
                f"INSERT INTO {table} (owner, key, request_hash, status, response_status, response_body, phi_read, "  # noqa: S608
                "subjects, created_at, completed_at) VALUES (%s, %s, %s, 'completed', %s, %s::jsonb, false, '{}', "
                "now(), now())",
                [f"key:{key.pk}", key_name, request_hash, status, json.dumps(stored)],
            )
    migration = importlib.import_module("integrations.migrations.0006_inbox_takes_event_keys")
    with connection.cursor() as cursor:
        cursor.execute(migration.FORWARD)
    row = InboundEvent.objects.get(key="old-key")
    assert (row.status, row.route, row.type, row.result) == ("applied", "event", "custom", old["result"])
    assert not InboundEvent.objects.filter(key="contact-key").exists()

    again = client.post(EVENTS, json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY="old-key")
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true", again.content
    assert inbox_apply()["applied"] == 0 and not Activity.objects.exists()


@pytest.mark.django_db
def test_an_applied_row_keeps_no_names_and_a_failed_one_keeps_them_for_a_retry(key_client):
    app = key_client(["events:write"])
    ContactFactory(email="one@example.com", external_id="u-1")
    post(app, {"type": "custom", "user": {"external_id": "u-1", "email": "one@example.com"}}, "fine")
    Subscription.objects.create(contact=ContactFactory(), plan="Core", external_id="s")  # another user's
    cancel = {"type": "subscription_cancelled", "user": {"external_id": "u-1"}, "properties": {"subscription_id": "s"}}
    post(app, cancel, "refused-later")
    inbox_apply()
    rows = {
        key: rest for key, *rest in InboundEvent.objects.values_list("key", "status", "user_email", "user_external_id")
    }
    assert rows == {"fine": ["applied", "", ""], "refused-later": ["failed", "", "u-1"]}
    assert InboundEvent.objects.get(key="refused-later").payload is not None


@pytest.mark.django_db
def test_erasure_finds_the_inbox_rows_by_their_partial_indexes(key_client):
    """Queued and failed rows go; an applied row still naming the person (applied by a version
    before the applier cleared names) is blanked; each found by a partial index, so the
    erasure never reads the whole inbox."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from integrations.privacy import erase_inbound_events

    app = key_client(["events:write"])
    contact = ContactFactory(email="gone@example.com", external_id="u-gone")
    ContactFactory(email=None, external_id="u-stays")
    for key, user in (("applied", "u-gone"), ("older", "u-gone"), ("other", "u-stays")):
        post(app, {"type": "custom", "user": {"external_id": user}}, key)
    inbox_apply()
    for key, user in (("older", "u-gone"), ("other", "u-stays")):  # applied as before 0008: names kept
        InboundEvent.objects.filter(key=key).update(user_external_id=user)
    post(app, {"type": "page_viewed", "user": {"email": "gone@example.com"}}, "queued")
    with CaptureQueriesContext(connection) as queries:
        assert erase_inbound_events(contact_ids=[contact.pk], actor=None) == 2
    rows = InboundEvent.objects.order_by("key").values_list("key", "status", "user_external_id")
    assert list(rows) == [("applied", "applied", ""), ("older", "applied", ""), ("other", "applied", "u-stays")]
    writes = [q["sql"] for q in queries if q["sql"].startswith(("DELETE FROM", "UPDATE"))]
    assert len(writes) == 2
    index_plans(writes)
