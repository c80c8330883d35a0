import json
import subprocess
import sys
import types
from datetime import timedelta

import pytest
from django.utils import timezone

from compliance.models import AdminNotice, AuditEvent
from crm_platform.models import OutboxMessage
from crm_platform.outbox import _kick_relay, outbox_publish
from integrations import relay
from integrations.destinations import (
    DEFAULT_RETRY_SCHEDULE,
    BaseDestination,
    PermanentDeliveryError,
    TransientDeliveryError,
    destination_for,
    register_destination,
    unregister_destination,
)
from integrations.models import WebhookDelivery, WebhookEndpoint
from integrations.tests.conftest import verified
from tests.support import ROOT, django_env

pytestmark = pytest.mark.django_db

# CONTRACTS.md, Standard Webhooks: after a failure, retry immediately, then after 5 s, 5 min,
# 30 min, 2 h, 5 h, 10 h, 10 h ("immediately" is the first attempt, sent as soon as it is due).
STANDARD_WEBHOOKS_WAITS = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600]


def _children(parent):
    return OutboxMessage.objects.filter(parent=parent).order_by("id")


def _make_due():
    OutboxMessage.objects.filter(status__in=relay.OPEN).update(next_attempt_at=timezone.now())


# ----------------------------------------------------------------------------- routing


def test_routing_writes_one_row_per_interested_endpoint_and_marks_the_parent_routed(make_endpoint, publish):
    everything, _ = make_endpoint()
    leads_only, _ = make_endpoint(event_types=["lead.captured"])
    contacts, _ = make_endpoint(event_types=["contact.updated"])
    parent = publish("contact.updated", 5)

    assert relay.outbox_route_batch() == 1

    parent.refresh_from_db()
    assert parent.status == OutboxMessage.Status.ROUTED and parent.delivered_at is not None
    assert sorted(c.destination for c in _children(parent)) == sorted(
        [f"webhook:{everything.pk}", f"webhook:{contacts.pk}"]
    )
    assert leads_only.pk not in {int(c.destination.split(":")[1]) for c in _children(parent)}


def test_an_internal_topic_is_routed_nowhere(make_endpoint, publish):
    make_endpoint()
    parent = publish("deal.manager_notification", 3)
    relay.outbox_route_batch()
    parent.refresh_from_db()
    assert parent.status == OutboxMessage.Status.ROUTED
    assert not _children(parent).exists()


def test_disabled_endpoints_get_no_rows(make_endpoint, publish, system_actor):
    from integrations.services import webhook_endpoint_disable

    endpoint, _ = make_endpoint()
    webhook_endpoint_disable(endpoint=endpoint, actor=system_actor)
    parent = publish()
    relay.outbox_route_batch()
    assert not _children(parent).exists()


# ----------------------------------------------------------------------------- delivery and signatures


def test_delivery_is_signed_per_standard_webhooks_and_carries_the_guarded_payload(make_endpoint, publish, receiver):
    _, secret = make_endpoint()
    parent = publish("lead.captured", 9, {"id": 9, "email": "a@example.com", "persona": "diabetic", "status": "new"})

    relay.outbox_relay(budget_seconds=10)

    [request] = receiver.requests
    body = verified(secret, request)  # raises when the signature does not match
    assert body["type"] == "lead.captured"
    assert body["data"] == {"id": 9, "email": "a@example.com", "status": "new"}  # persona is PHI
    assert body["timestamp"] == parent.created_at.isoformat()
    assert request.headers["webhook-id"] == f"msg_{parent.pk}"
    child = _children(parent).get()
    assert (child.status, child.attempts) == (OutboxMessage.Status.DELIVERED, 1)
    log = WebhookDelivery.objects.get()
    assert (log.succeeded, log.status_code, log.message_id, log.attempt) == (True, 200, child.pk, 1)
    assert log.response_excerpt == '{"ok": true}'


def test_an_endpoint_flagged_for_phi_gets_only_the_medical_fields_it_lists(make_endpoint, publish, receiver):
    _, secret = make_endpoint(may_receive_phi=True, phi_fields=["persona"])
    publish("lead.captured", 9, {"id": 9, "persona": "p", "assessment": {"score": 3}})
    relay.outbox_relay(budget_seconds=10)
    assert verified(secret, receiver.requests[0])["data"] == {"id": 9, "persona": "p"}


def test_topics_map_onto_public_event_types(make_endpoint, publish, receiver):
    _, secret = make_endpoint()
    publish("order.created", 1, {"id": 1})
    publish("lead.status_updated", 2, {"id": 2})
    publish("deal.stage_changed", 3, {"id": 3, "won": True})
    relay.outbox_relay(budget_seconds=10)
    assert [verified(secret, r)["type"] for r in receiver.requests] == [
        "order.placed",
        "lead.status_changed",
        "deal.won",
    ]


def test_a_won_or_lost_move_reaches_a_subscriber_of_stage_changes_once_under_the_type_it_asked_for(
    make_endpoint, publish, receiver
):
    """A move into a won stage went out only as deal.won: an endpoint that asked for
    deal.stage_changed alone never heard of the deal's last move (found by a review)."""
    from urllib.parse import urlsplit

    _, every_secret = make_endpoint(url=receiver.url + "/every")
    _, moves_secret = make_endpoint(url=receiver.url + "/moves", event_types=["deal.stage_changed"])
    _, both_secret = make_endpoint(url=receiver.url + "/both", event_types=["deal.stage_changed", "deal.lost"])
    make_endpoint(url=receiver.url + "/orders", event_types=["order.placed"])
    publish("deal.stage_changed", 3, {"id": 3, "lost": True})
    relay.outbox_relay(budget_seconds=10)
    secrets = {"every": every_secret, "moves": moves_secret, "both": both_secret}
    heard = {}
    for request in receiver.requests:
        name = urlsplit(request.path).path.rsplit("/", 1)[-1]
        heard[name] = verified(secrets[name], request)["type"]
    assert heard == {"every": "deal.lost", "moves": "deal.stage_changed", "both": "deal.lost"}


def test_a_retry_is_signed_afresh_with_a_new_timestamp_and_the_same_id(make_endpoint, publish, receiver, monkeypatch):
    import integrations.webhooks as webhooks

    _, secret = make_endpoint()
    receiver.respond(500)
    publish()
    real = webhooks.time
    clock = types.SimpleNamespace(time=real.time, monotonic=real.monotonic)
    monkeypatch.setattr(webhooks, "time", clock)

    relay.outbox_relay(budget_seconds=10)
    row = OutboxMessage.objects.exclude(destination="").get()
    assert (row.status, row.attempts) == (OutboxMessage.Status.FAILED, 1)
    assert row.next_attempt_at > timezone.now() + timedelta(seconds=STANDARD_WEBHOOKS_WAITS[0] - 2)

    clock.time = lambda: real.time() + 7  # the retry happens later
    _make_due()
    relay.outbox_relay(budget_seconds=10)

    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    verified(secret, first)
    verified(secret, second)
    row.refresh_from_db()
    assert (row.status, row.attempts) == (OutboxMessage.Status.DELIVERED, 2)
    assert list(WebhookDelivery.objects.order_by("id").values_list("attempt", "status_code")) == [(1, 500), (2, 200)]


def test_a_timeout_is_a_failed_attempt_to_retry(make_endpoint, publish, receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    make_endpoint()
    receiver.respond("timeout")
    publish()
    relay.outbox_relay(budget_seconds=10)
    row = OutboxMessage.objects.exclude(destination="").get()
    assert (row.status, row.last_error) == (OutboxMessage.Status.FAILED, "timeout")
    assert WebhookDelivery.objects.get().error == "timeout"


def test_the_delivery_timeout_defaults_to_ten_seconds(settings):
    from integrations.webhooks import timeout_seconds

    env = django_env()
    env.pop("WEBHOOK_TIMEOUT_SECONDS", None)
    code = "from crm_platform import settings; print(settings.WEBHOOK_TIMEOUT_SECONDS)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert float(out.stdout) == 10.0  # the settings module's own default, not the tests' 2 s

    del settings.WEBHOOK_TIMEOUT_SECONDS
    assert timeout_seconds() == 10.0  # and the fallback when the setting is missing


def test_410_gone_disables_the_endpoint_and_kills_the_row(make_endpoint, publish, receiver):
    endpoint, _ = make_endpoint()
    receiver.default = 410
    publish()
    relay.outbox_relay(budget_seconds=10)
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.needs_attention, endpoint.disabled_reason) == (False, True, "410 Gone")
    assert OutboxMessage.objects.exclude(destination="").get().status == OutboxMessage.Status.DEAD
    assert AuditEvent.objects.filter(action="webhook_endpoint.disable", object_id=str(endpoint.pk)).exists()
    publish(object_id=2)
    relay.outbox_relay(budget_seconds=10)
    assert len(receiver.requests) == 1  # nothing more is routed to it


def test_webhook_rows_die_after_the_standard_webhooks_schedule(make_endpoint, publish, receiver):
    make_endpoint()
    receiver.default = 503
    publish()
    waits = []
    for _ in range(8):
        before = timezone.now()
        relay.outbox_relay(budget_seconds=10)
        row = OutboxMessage.objects.exclude(destination="").get()
        if row.status == OutboxMessage.Status.FAILED:
            waits.append(round((row.next_attempt_at - before).total_seconds()))
        _make_due()
    assert row.status == OutboxMessage.Status.DEAD
    assert row.attempts == len(receiver.requests) == 8  # at once, then 7 retries
    assert waits == STANDARD_WEBHOOKS_WAITS


class _Flaky(BaseDestination):
    name = "flaky"
    topics = frozenset({"contact.updated"})

    def __init__(self, error):
        self.error = error
        self.calls = 0

    def deliver(self, message):
        self.calls += 1
        raise self.error


@pytest.fixture
def flaky():
    def register(error):
        destination = _Flaky(error)
        register_destination(destination)
        return destination

    yield register
    unregister_destination("flaky")


def test_other_destinations_use_the_default_schedule_then_die(flaky, publish):
    destination = flaky(TransientDeliveryError("503"))
    publish()
    waits = []
    for _ in range(len(DEFAULT_RETRY_SCHEDULE) + 1):
        before = timezone.now()
        relay.outbox_route_batch()
        relay.outbox_deliver_batch()
        row = OutboxMessage.objects.get(destination="flaky")
        if row.status == OutboxMessage.Status.FAILED:
            waits.append(round((row.next_attempt_at - before).total_seconds()))
        _make_due()
    assert waits == [1, 2, 4, 8, 16, 32, 300, 1800, 7200, 18000, 36000, 36000]
    assert (row.status, row.attempts, destination.calls) == (OutboxMessage.Status.DEAD, 13, 13)


def test_a_permanent_error_kills_the_row_at_once(flaky, publish):
    flaky(PermanentDeliveryError("400 bad input"))
    publish()
    relay.outbox_relay(budget_seconds=10)
    row = OutboxMessage.objects.get(destination="flaky")
    assert (row.status, row.attempts, row.last_error) == (OutboxMessage.Status.DEAD, 1, "400 bad input")


def test_an_adapter_bug_fails_its_row_without_undoing_the_batch(flaky, make_endpoint, publish, receiver):
    flaky(KeyError("boom"))
    make_endpoint()
    publish()
    relay.outbox_relay(budget_seconds=10)
    assert OutboxMessage.objects.get(destination="flaky").status == OutboxMessage.Status.FAILED
    assert OutboxMessage.objects.get(destination__startswith="webhook:").status == OutboxMessage.Status.DELIVERED


# ----------------------------------------------------------------------------- ordering


def test_a_later_change_to_an_object_never_overtakes_an_earlier_one(make_endpoint, publish, receiver):
    _, secret = make_endpoint()
    receiver.respond(500)  # the first delivery fails
    publish("contact.updated", 1, {"id": 1, "lead_score": 1})
    publish("contact.updated", 1, {"id": 1, "lead_score": 2})
    publish("contact.updated", 2, {"id": 2, "lead_score": 9})  # another object is not held up

    relay.outbox_relay(budget_seconds=10)
    assert [json.loads(r.body)["data"] for r in receiver.requests] == [
        {"id": 1, "lead_score": 1},
        {"id": 2, "lead_score": 9},
    ]
    _make_due()
    relay.outbox_relay(budget_seconds=10)
    scores = [json.loads(r.body)["data"]["lead_score"] for r in receiver.requests]
    assert scores == [1, 9, 1, 2]
    verified(secret, receiver.requests[-1])


def test_a_dead_earlier_row_no_longer_holds_later_ones_back(flaky, publish):
    flaky(PermanentDeliveryError("no"))
    publish(object_id=1)
    relay.outbox_relay(budget_seconds=10)
    unregister_destination("flaky")
    ok = flaky(None)
    ok.deliver = lambda message: None
    publish(object_id=1)
    relay.outbox_relay(budget_seconds=10)
    statuses = list(OutboxMessage.objects.filter(destination="flaky").order_by("id").values_list("status", flat=True))
    assert statuses == [OutboxMessage.Status.DEAD, OutboxMessage.Status.DELIVERED]


# ----------------------------------------------------------------------------- endpoint health, limits, SSRF


def test_an_endpoint_failing_for_five_days_is_disabled_with_a_notice(make_endpoint, publish, receiver, admin_client):
    endpoint, _ = make_endpoint()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(days=5, hours=1))
    receiver.default = 500
    publish()
    relay.outbox_relay(budget_seconds=10)
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.needs_attention) == (False, True)
    assert endpoint.disabled_reason.startswith("failing since")
    # Staff who manage endpoints are told on the admin index until someone resolves it.
    notice = AdminNotice.objects.get(source="webhooks", resolved_at__isnull=True)
    assert notice.title == f"Webhook endpoint #{endpoint.pk} was disabled" and "failing since" in notice.body
    assert notice.title.encode() in admin_client.get("/admin/").content


def test_a_success_ends_the_failure_run(make_endpoint, publish):
    endpoint, _ = make_endpoint()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(days=1))
    publish()
    relay.outbox_relay(budget_seconds=10)
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None and endpoint.enabled


def test_an_endpoint_over_its_rate_limit_is_deferred_without_spending_an_attempt(make_endpoint, publish, receiver):
    make_endpoint(rate_limit_per_minute=1)
    publish(object_id=1)
    publish(object_id=2)
    relay.outbox_relay(budget_seconds=10)
    assert len(receiver.requests) == 1
    waiting = OutboxMessage.objects.get(destination__startswith="webhook:", object_id="2")
    assert (waiting.status, waiting.attempts) == (OutboxMessage.Status.PENDING, 0)
    assert waiting.next_attempt_at > timezone.now()


@pytest.mark.parametrize("redis_up", [True, False], ids=["shared window in Redis", "Redis away: the delivery log"])
def test_an_endpoints_rate_limit_holds_across_batches(make_endpoint, publish, receiver, settings, redis_up):
    """The window is Redis's, shared by every worker and batch; without Redis the relay still
    holds the limit from the delivery log."""
    if not redis_up:
        settings.REDIS_URL = "redis://127.0.0.1:1/0"
    make_endpoint(rate_limit_per_minute=2)
    for n in range(5):
        publish(object_id=n + 1)
    relay.outbox_relay(budget_seconds=10)
    OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).update(next_attempt_at=timezone.now())
    relay.outbox_relay(budget_seconds=10)  # a second batch within the minute
    assert len(receiver.requests) == 2
    waiting = OutboxMessage.objects.filter(destination__startswith="webhook:", status=OutboxMessage.Status.PENDING)
    assert waiting.count() == 3 and all(row.next_attempt_at > timezone.now() for row in waiting)


def test_a_private_target_is_refused_at_delivery_time_when_not_allowed(make_endpoint, publish, receiver, settings):
    make_endpoint()
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    publish()
    relay.outbox_relay(budget_seconds=10)
    row = OutboxMessage.objects.exclude(destination="").get()
    assert (row.status, row.last_error) == (OutboxMessage.Status.DEAD, "target address refused")
    assert receiver.requests == []
    # Not silent: every later row would die alike, so the endpoint is off and staff are told.
    endpoint = WebhookEndpoint.objects.get()
    assert not endpoint.enabled and endpoint.needs_attention and "private" in endpoint.disabled_reason
    assert AdminNotice.objects.filter(source="webhooks", resolved_at__isnull=True).count() == 1


# ----------------------------------------------------------------------------- replay, purge, kick


def test_replay_resets_dead_rows_and_sends_them_again(make_endpoint, publish, receiver, system_actor):
    make_endpoint()
    receiver.respond(410)
    parent = publish()
    relay.outbox_relay(budget_seconds=10)
    WebhookEndpoint.objects.update(enabled=True)
    assert relay.outbox_replay(ids=[parent.pk], actor=system_actor) == 1  # a parent replays its undelivered rows
    relay.outbox_relay(budget_seconds=10)
    assert _children(parent).get().status == OutboxMessage.Status.DELIVERED
    assert len(receiver.requests) == 2
    assert AuditEvent.objects.filter(action="outbox.replay").count() == 1


def test_purge_deletes_only_delivered_rows_past_the_retention(make_endpoint, publish, settings):
    settings.OUTBOX_RETENTION_DAYS = 7
    make_endpoint()
    publish(object_id=1)
    relay.outbox_relay(budget_seconds=10)
    OutboxMessage.objects.update(delivered_at=timezone.now() - timedelta(days=8))
    waiting = publish(object_id=2)
    dead = OutboxMessage.objects.create(
        topic="x", destination="webhook:1", object_type="t", object_id="3", status=OutboxMessage.Status.DEAD
    )
    assert relay.outbox_purge() == 2  # the routed parent and its delivered child
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {waiting.pk, dead.pk}


def test_publishing_kicks_the_relay_once_per_transaction(django_capture_on_commit_callbacks, make_key):
    from django.db import transaction

    key, _ = make_key()
    actor = __import__("crm_platform.actor", fromlist=["Actor"]).Actor.system("t")
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        outbox_publish(topic="contact.updated", obj=key, payload={}, actor=actor)
        outbox_publish(topic="contact.updated", obj=key, payload={}, actor=actor)
    assert [cb for cb in callbacks if cb is _kick_relay] == [_kick_relay]


def test_a_worker_shutting_down_stops_the_relay_between_batches(make_endpoint, publish, receiver):
    from celery.signals import worker_shutting_down

    from integrations import tasks

    make_endpoint()
    publish()
    worker_shutting_down.send(sender="test", sig="SIGTERM", how="Warm", exitcode=0)
    try:
        assert tasks.outbox_relay.apply().get() == {"routed": 0, "attempted": 0, "postponed": 0}
    finally:
        tasks._shutting_down.clear()  # this test process is no worker: take the flag back
    assert receiver.requests == []
    assert tasks.outbox_relay.apply().get() == {"routed": 1, "attempted": 1, "postponed": 0}


@pytest.mark.parametrize(
    ("header", "waits_at_least"), [("120", 120), ("\u00b2", 0), ("Wed, 21 Oct 2026 07:28:00 GMT", 0)]
)
def test_a_429_retry_after_in_seconds_is_honoured_and_anything_else_ignored(
    make_endpoint, publish, receiver, header, waits_at_least
):
    """Retry-After "²" passed str.isdigit() and broke int(): the batch failed."""
    make_endpoint()
    receiver.respond((429, {"Retry-After": header}))
    publish()
    before = timezone.now()
    relay.outbox_relay(budget_seconds=10)
    row = OutboxMessage.objects.exclude(destination="").get()
    assert (row.status, row.attempts, row.last_error) == (OutboxMessage.Status.FAILED, 1, "HTTP 429")
    assert row.next_attempt_at >= before + timedelta(seconds=waits_at_least)
    assert WebhookDelivery.objects.get().status_code == 429


@pytest.mark.parametrize("header", ["9" * 12, "9" * 5000, "3153600000"])
def test_a_retry_after_beyond_the_schedule_waits_the_longest_step_and_spares_the_batch(
    make_endpoint, publish, receiver, header
):
    """Retry-After 999999999999 overflowed the date and rolled back the whole relay batch, every
    sweep: other endpoints got their rows again and again, and the failure was never logged.
    Past the schedule's longest wait (10 h) the receiver gets that, no more."""
    from tests.fakes.webhook_receiver import WebhookReceiver

    with WebhookReceiver() as good:
        hostile, _ = make_endpoint()
        make_endpoint(url=good.url)
        receiver.respond((503, {"Retry-After": header}))
        publish()
        before = timezone.now()
        relay.outbox_relay(budget_seconds=10)
        rows = {r.destination: r for r in OutboxMessage.objects.exclude(destination="")}
        assert len(good.requests) == 1
        assert rows[f"webhook:{hostile.pk}"].status == OutboxMessage.Status.FAILED
        others = [r for d, r in rows.items() if d != f"webhook:{hostile.pk}"]
        assert [r.status for r in others] == [OutboxMessage.Status.DELIVERED]
        longest = max(destination_for(f"webhook:{hostile.pk}").retry_schedule)
        wait = rows[f"webhook:{hostile.pk}"].next_attempt_at - before
        assert timedelta(seconds=longest) <= wait <= timedelta(seconds=longest + 60)
        assert WebhookDelivery.objects.filter(endpoint=hostile, status_code=503).count() == 1
        relay.outbox_relay(budget_seconds=10)  # nothing due: the good receiver hears nothing twice
        assert len(good.requests) == 1
