"""SyncEvent: recorded by the ingest API and the relay, listed and retried in the admin, purged."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from compliance.models import AuditEvent
from compliance.tasks import retention_purge
from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from crm_platform.models import OutboxMessage
from integrations import relay
from integrations.models import SyncEvent
from integrations.sync import payload_digest
from integrations.tasks import inbox_apply
from tests.support import index_names, index_plans

pytestmark = pytest.mark.django_db
EVENTS = "/api/v1/events"
BATCH = "/api/v1/events/batch"


@pytest.fixture
def app(key_client):
    return key_client(["events:write"], name="mobile app")


def send(client, body, key):
    """POST one event, then let the inbox applier run (as the worker does after the kick)."""
    response = client.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    inbox_apply()
    return response


def _inbound(**filters):
    return SyncEvent.objects.filter(direction="inbound", **filters)


# ----------------------------------------------------------------------------- inbound


def test_an_applied_event_is_recorded_with_its_digest_and_no_values(app):
    occurred = timezone.now().replace(microsecond=0)
    body = {
        "type": "profile_updated",
        "occurred_at": occurred.isoformat(),
        "user": {"external_id": "u-7", "email": "ann@example.com"},
        "properties": {"first_name": "Ann", "phone": "+14155552671"},
    }
    response = send(app, body, "k1")
    assert response.status_code == 202, response.content
    contact = Contact.objects.get(external_id="u-7")

    event = _inbound().get()
    assert (event.provider, event.event_type, event.status, event.attempts) == ("app", "profile_updated", "applied", 1)
    assert (event.object_type, event.object_id, event.external_id) == ("contacts.contact", str(contact.pk), "u-7")
    assert event.occurred_at == occurred and event.last_error == "" and event.outbox_message_id is None
    expected = {
        "type": "profile_updated",
        "occurred_at": occurred,
        "user": {"external_id": "u-7", "email": "ann@example.com"},
        "properties": {"first_name": "Ann", "phone": "+14155552671"},
        "source": "app",
    }
    assert event.payload_digest == payload_digest(expected)
    stored = " ".join(str(v) for v in SyncEvent.objects.values().get().values())
    assert "Ann" not in stored and "ann@example.com" not in stored and "+14155552671" not in stored


def test_a_replayed_request_records_nothing_more(app):
    body = {"type": "account_created", "user": {"external_id": "u-1"}}
    send(app, body, "same")
    send(app, body, "same")
    assert _inbound().count() == 1


def test_a_stale_event_is_recorded_as_skipped_stale_naming_its_fields(app):
    now = timezone.now()
    user = {"external_id": "u-2"}
    for key, at, name in (("a", now, "N"), ("b", now - timedelta(days=1), "O")):
        body = {"type": "profile_updated", "user": user, "occurred_at": at.isoformat()}
        send(app, {**body, "properties": {"last_name": name}}, key)
    assert list(_inbound().order_by("id").values_list("status", "last_error")) == [
        ("applied", ""),
        ("skipped_stale", "stale: last_name"),
    ]


def test_a_refused_event_is_recorded_as_failed_though_nothing_else_is_written(app):
    body = {"type": "food_logged", "user": {"external_id": "nobody-here"}, "properties": {"kcal": 300}}
    response = send(app, body, "k-fail")
    assert response.status_code == 400
    assert not Contact.objects.filter(external_id="nobody-here").exists()
    event = _inbound(external_id="nobody-here").get()
    assert (event.status, event.last_error, event.object_id) == ("failed", "ValidationError: user", "")


def test_a_conflict_is_recorded_as_failed_with_field_names_only(app):
    ContactFactory(email="one@example.com", external_id="u-a")
    ContactFactory(email="two@example.com", external_id="u-b")
    body = {"type": "custom", "user": {"external_id": "u-a", "email": "two@example.com"}}
    assert send(app, body, "k-conflict").status_code == 409
    event = _inbound(external_id="u-a").get()
    assert event.status == "failed" and event.last_error.startswith("ConflictError")
    assert "two@example.com" not in event.last_error


def test_the_batch_records_one_event_per_accepted_event(app):
    ContactFactory(email=None, external_id="u-3")
    events = [
        {"id": "e1", "type": "page_viewed", "user": {"external_id": "u-3"}, "properties": {"path": "/a"}},
        {"id": "e2", "type": "page_viewed", "user": {"external_id": "u-3"}, "properties": {"path": "/b"}},
    ]
    response = app.post(BATCH, {"events": events}, format="json")
    assert response.status_code == 202 and response.json()["accepted"] == 2
    assert not _inbound().exists()  # queued, not applied yet
    inbox_apply()
    assert _inbound(status="applied", external_id="u-3").count() == 2


# ----------------------------------------------------------------------------- outbound


def test_the_relay_keeps_one_event_per_delivery_row_updated_on_each_attempt(make_endpoint, publish, receiver):
    endpoint, _ = make_endpoint()
    receiver.respond(500)
    parent = publish("contact.updated", 4, {"id": 4, "lead_score": 10})

    relay.outbox_relay(budget_seconds=10)
    child = OutboxMessage.objects.get(parent=parent)
    event = SyncEvent.objects.get(direction="outbound")
    assert (event.provider, event.event_type, event.object_type, event.object_id) == (
        f"webhook:{endpoint.pk}",
        "contact.updated",
        "contacts.contact",
        "4",
    )
    assert (event.status, event.attempts, event.last_error) == ("failed", 1, "HTTP 500")
    assert event.outbox_message_id == child.pk
    assert event.payload_digest == payload_digest({"id": 4, "lead_score": 10})

    OutboxMessage.objects.filter(pk=child.pk).update(next_attempt_at=timezone.now())
    relay.outbox_relay(budget_seconds=10)
    event.refresh_from_db()
    assert (event.status, event.attempts, event.last_error) == ("applied", 2, "")
    assert SyncEvent.objects.filter(direction="outbound").count() == 1


def test_a_dead_delivery_is_recorded_dead(make_endpoint, publish, receiver):
    make_endpoint()
    receiver.default = 410
    publish()
    relay.outbox_relay(budget_seconds=10)
    assert SyncEvent.objects.get(direction="outbound").status == "dead"


# ----------------------------------------------------------------------------- admin


def _changelist(admin_client, **params):
    return admin_client.get(reverse("admin:integrations_syncevent_changelist"), params)


def test_the_admin_list_renders_with_each_filter_and_searches_by_object_and_digest(admin_client, app):
    send(app, {"type": "account_created", "user": {"external_id": "u-9"}}, "k")
    event = _inbound().get()
    row = reverse("admin:integrations_syncevent_change", args=[event.pk]).encode()
    # As the date filter's own links say it: midnight in the current time zone, aware.
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    for params in (
        {},
        {"direction": "inbound"},
        {"provider": "app"},
        {"status": "applied"},
        {"event_type": "account_created"},
        {"created_at__gte": str(today), "created_at__lt": str(today + timedelta(days=1))},
    ):
        response = _changelist(admin_client, **params)
        assert response.status_code == 200, params
        assert row in response.content, params
    for params in ({"direction": "outbound"}, {"status": "failed"}, {"event_type": "custom"}):
        assert row not in _changelist(admin_client, **params).content, params
    for term in (event.object_id, event.payload_digest, event.payload_digest.upper(), " u-9 "):
        assert row in _changelist(admin_client, q=term).content
    for term in ("nothing-like-it", "U-9", event.payload_digest[:-1]):
        assert row not in _changelist(admin_client, q=term).content


def test_the_admin_search_is_answered_by_the_logs_indexes(admin_client, app, rf):
    """Each search term is looked up exactly, by the log's indexes: Django's own "=" search
    compares UPPER(column), which no index serves, so it read the whole log. (The plans are of
    the search's filter, without the changelist's ORDER BY id DESC LIMIT, which a tiny test
    table lets the planner answer by walking the primary key.)"""
    from django.contrib.admin import site

    send(app, {"type": "account_created", "user": {"external_id": "u-9"}}, "k")
    digest = _inbound().get().payload_digest
    model_admin = site._registry[SyncEvent]
    for term in ("u-9", digest, digest.upper()):
        found, _ = model_admin.get_search_results(rf.get("/"), SyncEvent.objects.order_by(), term)
        assert found.count() == 1, term
        [plan] = index_plans([found])
        assert ("sync_event_digest_hash" in index_names(plan)) == (term.lower() == digest), plan


def test_the_admin_is_read_only(admin_client, app):
    send(app, {"type": "account_created", "user": {"external_id": "u-9"}}, "k")
    event = _inbound().get()
    assert admin_client.get(reverse("admin:integrations_syncevent_add")).status_code == 403
    change = admin_client.post(reverse("admin:integrations_syncevent_change", args=[event.pk]), {"status": "dead"})
    assert change.status_code == 403
    event.refresh_from_db()
    assert event.status == "applied"


def _retry(client, ids):
    url = reverse("admin:integrations_syncevent_changelist")
    return client.post(url, {"action": "retry", "_selected_action": [str(i) for i in ids]}, follow=True)


def test_retry_replays_an_outbound_delivery(admin_client, make_endpoint, publish, receiver):
    from integrations.models import WebhookEndpoint

    make_endpoint()
    receiver.respond(410)
    publish()
    relay.outbox_relay(budget_seconds=10)
    WebhookEndpoint.objects.update(enabled=True)
    event = SyncEvent.objects.get(direction="outbound", status="dead")

    response = _retry(admin_client, [event.pk])

    assert b"1 outbox row(s) will be sent again" in response.content
    event.refresh_from_db()
    assert (event.status, event.attempts) == ("pending", 0)
    assert AuditEvent.objects.filter(action="outbox.replay").count() == 1
    relay.outbox_relay(budget_seconds=10)
    event.refresh_from_db()
    assert (event.status, event.attempts) == ("applied", 1)
    assert len(receiver.requests) == 2


def test_retry_of_a_delivery_a_later_message_overtook_warns_of_it(admin_client, make_endpoint, publish, receiver):
    from integrations.models import WebhookEndpoint

    make_endpoint()
    receiver.respond(410)
    publish(object_id=1, payload={"id": 1, "first_name": "Older"})
    relay.outbox_relay(budget_seconds=10)
    WebhookEndpoint.objects.update(enabled=True)
    publish(object_id=1, payload={"id": 1, "first_name": "Newer"})
    relay.outbox_relay(budget_seconds=10)  # delivered: the older one, replayed, arrives after it
    event = SyncEvent.objects.get(direction="outbound", status="dead")
    response = _retry(admin_client, [event.pk])
    assert b"1 of them are older than a message already delivered for the same object" in response.content


def test_retry_of_an_inbound_event_explains_and_changes_nothing(admin_client, app):
    send(app, {"type": "food_logged", "user": {"external_id": "ghost"}}, "k-ghost")
    event = _inbound(external_id="ghost").get()
    response = _retry(admin_client, [event.pk])
    assert b"can be applied again from Inbound events" in response.content
    event.refresh_from_db()
    assert (event.status, event.attempts) == ("failed", 1)
    assert not AuditEvent.objects.filter(action="outbox.replay").exists()


def test_retry_needs_the_outbox_change_permission(client, staff_user, make_endpoint, publish, receiver):
    from django.contrib.auth.models import Permission

    make_endpoint()
    receiver.default = 410
    publish()
    relay.outbox_relay(budget_seconds=10)
    staff_user.user_permissions.add(Permission.objects.get(codename="view_syncevent"))
    client.force_login(staff_user)
    assert _changelist(client).status_code == 200
    event = SyncEvent.objects.get(direction="outbound")
    _retry(client, [event.pk])
    event.refresh_from_db()
    assert event.status == "dead"


# ----------------------------------------------------------------------------- retention


def test_the_daily_purge_deletes_sync_events_past_the_retention(app, settings):
    settings.SYNC_EVENT_RETENTION_DAYS = 30
    send(app, {"type": "account_created", "user": {"external_id": "u-old"}}, "k1")
    send(app, {"type": "account_created", "user": {"external_id": "u-new"}}, "k2")
    _inbound(external_id="u-old").update(created_at=timezone.now() - timedelta(days=31))

    result = retention_purge.apply().get()  # the one retention job (compliance.retention)

    assert result["integrations.syncevent"] == 1
    assert list(_inbound().values_list("external_id", flat=True)) == ["u-new"]


def test_the_payload_digest_is_keyed_not_a_plain_hash_of_the_payload():
    import hashlib
    import json

    payload = {"user": {"email": "guess.me@example.com"}, "type": "user_logged_in"}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert payload_digest(payload) != hashlib.sha256(canonical.encode()).hexdigest()
    assert payload_digest(payload) == payload_digest(dict(reversed(payload.items())))


def test_the_payload_digest_keeps_its_canonical_json_for_ordinary_payloads():
    """orjson writes it now; for strings, integers, decimals, dates and ordinary floats the
    canonical form (sorted keys, no spaces, UTF-8, values as DjangoJSONEncoder writes them) is
    what it was, so old digests still match (floats with an exponent are written otherwise)."""
    import datetime as dt
    import json
    from decimal import Decimal

    from django.core.serializers.json import DjangoJSONEncoder

    from compliance.crypto import hmac_digest

    payload = {
        "type": "order_placed",
        "occurred_at": dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC),
        "user": {"email": "zoë@example.com", "external_id": "u-1"},
        "properties": {
            "amount": Decimal("19.90"),
            "items": [{"sku": "a", "qty": 2}],
            "ratio": 0.25,
            "weight_kg": 72.35,
            "kcal": 1234.5678,
            "ok": True,
            "note": None,
        },
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, cls=DjangoJSONEncoder)
    assert payload_digest(payload) == hmac_digest(canonical)
