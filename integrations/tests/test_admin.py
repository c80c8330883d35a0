import pytest
from django.urls import reverse

from compliance.models import AdminNotice
from crm_platform.models import OutboxMessage
from integrations import relay
from integrations.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db


def _action(admin_client, model, action, ids):
    url = reverse(f"admin:{model}_changelist")
    return admin_client.post(url, {"action": action, "_selected_action": [str(i) for i in ids]}, follow=True)


def test_outbox_changelist_filters_and_is_read_only(admin_client, publish):
    publish()
    url = reverse("admin:crm_platform_outboxmessage_changelist")
    response = admin_client.get(url, {"status": "pending", "topic": "contact.updated"})
    assert response.status_code == 200 and b"contact.updated" in response.content
    assert admin_client.get(reverse("admin:crm_platform_outboxmessage_add")).status_code == 403


def test_an_outbox_payload_is_shown_to_phi_staff_only_and_each_view_is_audited(
    admin_client, client, staff_user, publish
):
    from django.contrib.auth.models import Permission

    from compliance.models import AuditEvent

    row = publish(object_id=7, payload={"id": 7, "treatment_plan": "plan-marker-42"})
    url = reverse("admin:crm_platform_outboxmessage_change", args=[row.pk])
    reads = AuditEvent.objects.filter(action="phi.read", object_type="crm_platform.outboxmessage")
    staff_user.user_permissions.add(Permission.objects.get(codename="view_outboxmessage"))
    client.force_login(staff_user)
    page = client.get(url)
    assert page.status_code == 200 and b"plan-marker-42" not in page.content
    assert not reads.exists()
    assert b"plan-marker-42" in admin_client.get(url).content
    # Its subject is the contact the message is about: "who viewed this patient" lists it.
    seen = list(reads.values_list("object_id", "changes__fields__new", "subject_id"))
    assert seen == [(str(row.pk), ["payload_published"], 7)]


def test_replay_from_the_outbox_admin_sends_dead_rows_again(admin_client, make_endpoint, publish, receiver):
    make_endpoint()
    receiver.respond(410)
    publish()
    relay.outbox_relay(budget_seconds=10)
    WebhookEndpoint.objects.update(enabled=True)
    dead = OutboxMessage.objects.get(status=OutboxMessage.Status.DEAD)
    response = _action(admin_client, "crm_platform_outboxmessage", "replay", [dead.pk])
    assert b"1 row(s) will be sent again" in response.content
    dead.refresh_from_db()
    assert (dead.status, dead.attempts) == (OutboxMessage.Status.PENDING, 0)
    relay.outbox_relay(budget_seconds=10)
    dead.refresh_from_db()
    assert dead.status == OutboxMessage.Status.DELIVERED


def test_staff_without_the_outbox_change_permission_cannot_replay(client, staff_user, publish):
    from django.contrib.auth.models import Permission

    staff_user.user_permissions.add(Permission.objects.get(codename="view_outboxmessage"))
    client.force_login(staff_user)
    row = publish()
    OutboxMessage.objects.filter(pk=row.pk).update(destination="webhook:1", status="dead")
    _action(client, "crm_platform_outboxmessage", "replay", [row.pk])
    assert OutboxMessage.objects.get(pk=row.pk).status == "dead"


def test_managing_endpoints_without_the_outbox_change_permission_cannot_replay_their_deliveries(
    client, staff_user, make_endpoint, publish
):
    """The endpoint page's "replay failed and dead deliveries" asked only for the endpoint's
    change permission; replaying outbox rows takes the outbox's, as on every other page."""
    from django.contrib.auth.models import Permission

    staff_user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_webhookendpoint", "change_webhookendpoint"])
    )
    client.force_login(staff_user)
    endpoint, _ = make_endpoint()
    row = publish()
    OutboxMessage.objects.filter(pk=row.pk).update(destination=f"webhook:{endpoint.pk}", status="dead")
    _action(client, "integrations_webhookendpoint", "replay_failed", [endpoint.pk])
    assert OutboxMessage.objects.get(pk=row.pk).status == "dead"
    staff_user.user_permissions.add(Permission.objects.get(codename="change_outboxmessage"))
    _action(client, "integrations_webhookendpoint", "replay_failed", [endpoint.pk])
    assert OutboxMessage.objects.get(pk=row.pk).status == "pending"


def _assert_not_kept_in_a_cookie(client, response, secret: str) -> None:
    """The page that made a secret shows it; no cookie (Django's message storage) carries it to
    the browser, and no later page shows it again."""
    assert all(secret not in morsel.value for morsel in response.cookies.values())
    assert all(secret not in morsel.value for morsel in client.cookies.values())
    assert secret.encode() not in client.get(reverse("admin:integrations_webhookendpoint_changelist")).content


def test_adding_an_endpoint_in_the_admin_shows_the_secret_once(admin_client, receiver):
    response = admin_client.post(
        reverse("admin:integrations_webhookendpoint_add"),
        {"url": receiver.url, "description": "Partner", "event_types": ["contact.created"], "phi_fields": ""},
    )
    endpoint = WebhookEndpoint.objects.get()
    assert response.status_code == 200 and endpoint.secret.encode() in response.content
    _assert_not_kept_in_a_cookie(admin_client, response, endpoint.secret)
    change = admin_client.get(reverse("admin:integrations_webhookendpoint_change", args=[endpoint.pk]))
    assert change.status_code == 200 and endpoint.secret.encode() not in change.content
    listing = admin_client.get(reverse("admin:integrations_webhookendpoint_changelist"))
    assert endpoint.secret.encode() not in listing.content


def test_the_admin_refuses_a_private_url_when_not_allowed(admin_client, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    response = admin_client.post(reverse("admin:integrations_webhookendpoint_add"), {"url": "http://127.0.0.1/h"})
    assert response.status_code == 200 and b"private" in response.content
    assert not WebhookEndpoint.objects.exists()


def test_endpoint_changelist_shows_stats_in_one_query(admin_client, make_endpoint, receiver, publish):
    """Of real deliveries: the test send that fails here is not one (it counted: 33.3%)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    endpoint = make_endpoint()[0]
    for _ in range(2):
        make_endpoint(event_types=["lead.captured"])
    receiver.respond(200, 500, 500)
    publish("contact.updated", 1)
    publish("contact.updated", 2)
    relay.outbox_relay(budget_seconds=10)
    _action(admin_client, "integrations_webhookendpoint", "send_test", [endpoint.pk])
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 3
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse("admin:integrations_webhookendpoint_changelist"))
    assert response.status_code == 200
    assert b"50.0%" in response.content and b"33.3%" not in response.content
    assert b"2 (+1 test)" in response.content
    assert sum("integrations_webhookdelivery" in q["sql"] for q in queries.captured_queries) == 1


def test_endpoint_actions_disable_enable_and_send_test(admin_client, make_endpoint, receiver):
    endpoint, _ = make_endpoint()
    _action(admin_client, "integrations_webhookendpoint", "disable", [endpoint.pk])
    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    _action(admin_client, "integrations_webhookendpoint", "enable", [endpoint.pk])
    endpoint.refresh_from_db()
    assert endpoint.enabled is True and endpoint.disabled_at is None
    response = _action(admin_client, "integrations_webhookendpoint", "send_test", [endpoint.pk])
    assert b"200 in" in response.content
    assert len(receiver.requests) == 1


def test_rotating_a_secret_in_the_admin_shows_the_new_one_once(admin_client, make_endpoint):
    endpoint, old = make_endpoint()
    url = reverse("admin:integrations_webhookendpoint_changelist")
    response = admin_client.post(url, {"action": "rotate_secret", "_selected_action": [str(endpoint.pk)]})
    endpoint.refresh_from_db()
    assert endpoint.secret != old and endpoint.previous_secret == old and endpoint.previous_secret_until
    assert response.status_code == 200 and endpoint.secret.encode() in response.content
    assert b"The old secret also signs until" in response.content
    _assert_not_kept_in_a_cookie(admin_client, response, endpoint.secret)
    # Reloading that page posts the action again: refused for a minute, both secrets kept.
    again = admin_client.post(url, {"action": "rotate_secret", "_selected_action": [str(endpoint.pk)]}, follow=True)
    assert b"rotated less than a minute ago" in again.content
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).previous_secret == old
    change = admin_client.get(reverse("admin:integrations_webhookendpoint_change", args=[endpoint.pk]))
    assert endpoint.secret.encode() not in change.content and old.encode() not in change.content


def test_replay_from_the_delivery_log(admin_client, make_endpoint, publish, receiver):
    make_endpoint()
    receiver.respond(410)
    publish()
    relay.outbox_relay(budget_seconds=10)
    WebhookEndpoint.objects.update(enabled=True)
    delivery = WebhookDelivery.objects.get()
    _action(admin_client, "integrations_webhookdelivery", "replay", [delivery.pk])
    relay.outbox_relay(budget_seconds=10)
    assert OutboxMessage.objects.get(pk=delivery.message_id).status == OutboxMessage.Status.DELIVERED
    assert len(receiver.requests) == 2


def _disabled_by_a_410_with_a_dead_message(make_endpoint, publish, receiver):
    endpoint, _ = make_endpoint()
    receiver.respond(410)
    publish(object_id=1, payload={"id": 1, "first_name": "Older"})
    relay.outbox_relay(budget_seconds=10)  # 410: endpoint disabled, its row dead
    endpoint.refresh_from_db()
    assert not endpoint.enabled
    return endpoint


def _heard(receiver) -> list[str]:
    import json

    return [json.loads(r.body)["data"]["first_name"] for r in receiver.requests]


def test_enable_and_replay_sends_the_failed_messages_before_any_new_one(admin_client, make_endpoint, publish, receiver):
    """The recovery the admin notice prescribes. Enabling, then replaying, let a change made in
    between go out first and the replayed older state last: a receiver applying updates as they
    come was left with stale data (found by a review). Enabled and queued in one transaction,
    the old messages keep their places and a newer one for the same object waits behind them."""
    endpoint = _disabled_by_a_410_with_a_dead_message(make_endpoint, publish, receiver)
    response = _action(admin_client, "integrations_webhookendpoint", "enable_and_replay", [endpoint.pk])
    assert b"1 message(s) go out again before any new one" in response.content
    publish(object_id=1, payload={"id": 1, "first_name": "Newer"})
    relay.outbox_relay(budget_seconds=10)
    relay.outbox_relay(budget_seconds=10)
    assert _heard(receiver) == ["Older", "Older", "Newer"]  # the 410, then in order
    notice = AdminNotice.objects.get(source="webhooks")
    assert "Enable and replay failed deliveries" in notice.body and notice.resolved_at is not None


def test_replaying_after_a_later_message_went_out_warns_that_it_arrives_after_it(
    admin_client, make_endpoint, publish, receiver
):
    endpoint = _disabled_by_a_410_with_a_dead_message(make_endpoint, publish, receiver)
    _action(admin_client, "integrations_webhookendpoint", "enable", [endpoint.pk])
    publish(object_id=1, payload={"id": 1, "first_name": "Newer"})
    relay.outbox_relay(budget_seconds=10)
    response = _action(admin_client, "integrations_webhookendpoint", "replay_failed", [endpoint.pk])
    assert b"1 of them are older than a message already delivered for the same object" in response.content
    relay.outbox_relay(budget_seconds=10)
    assert _heard(receiver) == ["Older", "Newer", "Older"]


def test_a_rate_limit_of_zero_is_refused_in_the_admin_as_in_the_api(admin_client, make_endpoint, publish, receiver):
    """The API refuses 0; the admin stored it, and the relay reads 0 as "no limit": staff who set
    0 to hold an endpoint's deliveries got every one of them sent at once."""
    response = admin_client.post(
        reverse("admin:integrations_webhookendpoint_add"), {"url": receiver.url, "rate_limit_per_minute": "0"}
    )
    assert response.status_code == 200 and b"greater than or equal to 1" in response.content
    assert not WebhookEndpoint.objects.exists()
    endpoint, _ = make_endpoint(rate_limit_per_minute=5)
    change = admin_client.post(
        reverse("admin:integrations_webhookendpoint_change", args=[endpoint.pk]),
        {"url": endpoint.url, "rate_limit_per_minute": "0", "phi_fields": ""},
    )
    assert change.status_code == 200 and b"greater than or equal to 1" in change.content
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).rate_limit_per_minute == 5


def test_purge_action_deletes_old_delivered_rows(admin_client, publish, settings):
    from datetime import timedelta

    from django.utils import timezone

    row = publish()
    OutboxMessage.objects.filter(pk=row.pk).update(status="routed", delivered_at=timezone.now() - timedelta(days=30))
    _action(admin_client, "crm_platform_outboxmessage", "purge_delivered", [row.pk])
    assert not OutboxMessage.objects.exists()
    from compliance.models import AuditEvent

    assert AuditEvent.objects.get(action="outbox.purge").changes["deleted"]["new"] == 1


def test_an_exact_search_admin_refuses_other_search_fields_at_start_up():
    """ExactSearchMixin's system check: a search field that is not "=field" on the model
    itself is an error when the project starts, not a 500 when someone searches."""
    from django.contrib.admin import site

    from integrations.admin import SyncEventAdmin
    from integrations.models import SyncEvent

    assert SyncEventAdmin(SyncEvent, site).check() == []
    for fields in (("object_id",), ("=outbox_message__topic",), ("=nothing",)):
        bad = type("Bad", (SyncEventAdmin,), {"search_fields": fields})
        assert [e.id for e in bad(SyncEvent, site).check()] == ["crm_platform.E001"], fields


def test_staff_without_view_phi_cannot_send_medical_fields_to_an_endpoint(client, staff_user, receiver):
    """In the admin, whether and which medical fields an endpoint receives, and the address of
    one that receives them, are read-only for staff who may not see medical fields."""
    from django.contrib.auth.models import Permission

    for codename in ("add_webhookendpoint", "change_webhookendpoint", "view_webhookendpoint"):
        staff_user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(staff_user)
    form = {"url": receiver.url, "description": "Partner", "may_receive_phi": "on", "phi_fields": "persona"}
    response = client.post(reverse("admin:integrations_webhookendpoint_add"), form, follow=True)
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.may_receive_phi, endpoint.phi_fields) == (False, [])
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(may_receive_phi=True, phi_fields=["persona"])
    change = reverse("admin:integrations_webhookendpoint_change", args=[endpoint.pk])
    moved = {**form, "url": receiver.url + "elsewhere", "description": "moved", "event_types": ["deal.won"]}
    client.post(change, moved, follow=True)
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.description, endpoint.may_receive_phi) == (receiver.url, "moved", True)
    assert endpoint.event_types == []  # as it was: not widened (or narrowed) by this user
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)
    _action(client, "integrations_webhookendpoint", "enable", [endpoint.pk])
    endpoint.refresh_from_db()
    assert endpoint.enabled is False


def test_an_endpoint_edited_in_the_admin_is_saved_and_audited(admin_client, make_endpoint, receiver):
    from compliance.models import AuditEvent

    endpoint, _ = make_endpoint()
    change = reverse("admin:integrations_webhookendpoint_change", args=[endpoint.pk])
    form = {"url": receiver.url, "description": "Billing partner", "rate_limit_per_minute": "30", "phi_fields": ""}
    assert admin_client.post(change, form).status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.description, endpoint.rate_limit_per_minute) == ("Billing partner", 30)
    audit = AuditEvent.objects.get(action="webhook_endpoint.update", object_id=str(endpoint.pk))
    assert set(audit.changes) == {"description", "rate_limit_per_minute"}


@pytest.mark.django_db(transaction=True)
def test_an_admin_save_racing_medical_fields_switched_on_keeps_the_address(client, staff_user, receiver):
    """The change form was read while the endpoint received no medical fields; they are switched
    on (by someone who may) before it is saved: the save waits for that change, then leaves the
    address and event types alone and says so."""
    from django.contrib.auth.models import Permission

    from tests.support import behind_a_lock

    for codename in ("change_webhookendpoint", "view_webhookendpoint"):
        staff_user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(staff_user)
    endpoint = WebhookEndpoint.objects.create(url=receiver.url, secret="whsec_" + "A" * 32)
    change = reverse("admin:integrations_webhookendpoint_change", args=[endpoint.pk])
    form = {"url": receiver.url + "elsewhere", "description": "moved", "event_types": ["deal.won"]}
    answer = behind_a_lock(
        "UPDATE integrations_webhookendpoint SET may_receive_phi = true, phi_fields = '{persona}' WHERE id = %s",
        [endpoint.pk],
        lambda: client.post(change, form, follow=True),
    )
    assert b"Not changed: event_types, url." in answer.content
    assert (receiver.url + "elsewhere").encode() not in answer.content  # nor named as saved
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.event_types, endpoint.description) == (receiver.url, [], "moved")
    assert endpoint.may_receive_phi is True


# ----------------------------------------------------------------------------- big-table pages
# Each page below is asked for through the admin; the queries it made are planned with
# sequential scans and sorts off (tests.support.list_plan): an index must find the page's rows
# and give their order, as on millions of rows.


@pytest.fixture
def many_rows(db):
    """Outbox, sync log and inbox rows alike in every filtered column, on many pages: on a table
    of one page every plan costs about the same and PostgreSQL may pick any."""
    from django.db import connection

    from integrations.models import InboundEvent, SyncEvent

    OutboxMessage.objects.bulk_create(
        OutboxMessage(topic="deal.stage_changed", object_type="leads.deal", object_id=f"9{n:05d}") for n in range(400)
    )
    SyncEvent.objects.bulk_create(
        SyncEvent(
            direction="inbound", provider="app", event_type="food_logged", status="applied", payload_digest="0" * 64
        )
        for _ in range(400)
    )
    InboundEvent.objects.bulk_create(
        InboundEvent(
            owner="key:1",
            key=f"fill-{n}",
            request_hash="h",
            route="batch",
            type="food_logged",
            actor=[],
            status="applied",
        )
        for n in range(400)
    )
    with connection.cursor() as cursor:  # statistics of these rows, not an earlier test's empty tables
        cursor.execute("ANALYZE crm_platform_outboxmessage, integrations_syncevent, integrations_inboundevent")


def _list_plans(admin_client, url, params, table):
    """The page, its plans (tests.support.list_plan for a list, search_plan for a search), and
    the queries it made."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.support import list_plan, list_queries, search_plan

    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(url, params)
    assert response.status_code == 200
    statements = list_queries(captured, table)
    assert statements, captured.captured_queries
    searched = [sql for sql in statements if params.get("q") and "WHERE" in sql]  # not the filters' choices
    plans = [(search_plan if sql in searched else list_plan)(sql) for sql in statements]
    return response, plans, captured


def _sort_links(html: str, columns) -> dict[str, bool]:
    import re

    return {c: bool(re.search(rf'class="[^"]*sortable[^"]*column-{c}', html)) for c in columns}


def test_outbox_filters_list_their_values_without_reading_the_table(admin_client, publish, many_rows):
    publish(topic="deal.created")
    OutboxMessage.objects.create(topic="contact.updated", destination="webhook:3", object_type="x", object_id="1")
    url = reverse("admin:crm_platform_outboxmessage_changelist")
    response, _, captured = _list_plans(admin_client, url, {"topic": "deal.created"}, "crm_platform_outboxmessage")
    assert not [q["sql"] for q in captured.captured_queries if "DISTINCT" in q["sql"]]
    html = response.content.decode()
    for link in ("?topic=contact.updated", "?topic=deal.created", "?destination=webhook%3A3", "?destination="):
        assert link in html, link
    assert response.context["cl"].result_count == 1
    _list_plans(admin_client, url, {"destination": "webhook:3"}, "crm_platform_outboxmessage")


@pytest.mark.parametrize(
    ("term", "found"), [("42", True), ("Contact.Updated", True), ("webhook:3", False), ("4", False)]
)
def test_outbox_search_is_exact_and_index_served(admin_client, publish, many_rows, term, found):
    row = publish(object_id=42)
    url = reverse("admin:crm_platform_outboxmessage_changelist")
    response, _, _ = _list_plans(admin_client, url, {"q": term}, "crm_platform_outboxmessage")
    assert (row in response.context["cl"].result_list) is found


def test_outbox_sorts_only_by_id(admin_client, publish):
    publish()
    html = admin_client.get(reverse("admin:crm_platform_outboxmessage_changelist")).content.decode()
    links = _sort_links(html, ("id", "topic", "destination", "object_type", "object_id", "status", "attempts"))
    assert links == {"id": True, **{c: False for c in links if c != "id"}}


def _sync_event(**fields):
    from integrations.models import SyncEvent

    values = {"direction": "inbound", "provider": "app", "event_type": "account_created", "status": "applied"}
    return SyncEvent.objects.create(**{**values, **fields, "payload_digest": "0" * 64})


@pytest.mark.parametrize(
    "params",
    [
        {"direction__exact": "outbound"},
        {"provider": "hubspot"},
        {"event_type": "contact.updated"},
        {"status__exact": "skipped_stale"},
    ],
)
def test_sync_log_filters_read_through_an_index(admin_client, many_rows, params):
    _sync_event()
    _sync_event(direction="outbound", provider="hubspot", event_type="contact.updated", status="skipped_stale")
    response, _, _ = _list_plans(
        admin_client, reverse("admin:integrations_syncevent_changelist"), params, "integrations_syncevent"
    )
    assert response.context["cl"].result_count == 1


def test_sync_log_sorts_offered_are_the_indexed_ones(admin_client):
    _sync_event()
    html = admin_client.get(reverse("admin:integrations_syncevent_changelist")).content.decode()
    indexed = ("id", "created_at", "object_id")
    others = ("direction", "provider", "event_type", "external_id", "status", "attempts", "outbox_message_id")
    assert _sort_links(html, indexed + others) == {c: c in indexed for c in indexed + others}


def _inbound(**fields):
    from integrations.models import InboundEvent

    values = {"owner": "key:1", "request_hash": "h", "route": "batch", "type": "food_logged", "actor": []}
    return InboundEvent.objects.create(**{**values, **fields})


@pytest.mark.parametrize(
    ("term", "which"),
    [
        ("event:abc", "applied"),  # an Idempotency-Key, any owner
        ("Ann@Example.com", "failed"),  # the email of a failed event, any case
        ("u-7", "pending"),  # the app user id of a queued one
        ("u-1", None),  # an applied event keeps no names
    ],
)
def test_inbox_search_finds_keys_and_names_through_indexes(admin_client, many_rows, term, which):
    rows = {
        "applied": _inbound(key="event:abc", owner="key:9", status="applied"),
        "failed": _inbound(key="k2", status="failed", user_email="ann@example.com"),
        "pending": _inbound(key="k3", status="pending", user_external_id="u-7"),
    }
    _inbound(key="k4", status="applied", user_external_id="")
    url = reverse("admin:integrations_inboundevent_changelist")
    response, _, _ = _list_plans(admin_client, url, {"q": term}, "integrations_inboundevent")
    assert list(response.context["cl"].result_list) == ([rows[which]] if which else [])
    response, _, _ = _list_plans(admin_client, url, {"q": str(rows["failed"].pk)}, "integrations_inboundevent")
    assert list(response.context["cl"].result_list) == [rows["failed"]]


@pytest.mark.parametrize("params", [{"type": "account_created"}, {"route__exact": "app_event"}])
def test_inbox_filters_find_the_rare_value(admin_client, many_rows, params):
    """No index serves these (migration 0011 says why: the inbox is the accepting request's one
    write, and retention keeps it short); the page reads the inbox newest first."""
    _inbound(key="k1")
    wanted = _inbound(key="k2", type="account_created", route="app_event")
    response = admin_client.get(reverse("admin:integrations_inboundevent_changelist"), params)
    assert list(response.context["cl"].result_list) == [wanted]
