import base64
import hashlib
import hmac
import json

import pytest

from integrations.models import WebhookDelivery, WebhookEndpoint
from integrations.tests.conftest import verified

pytestmark = pytest.mark.django_db

LIST = "/api/v1/webhook-endpoints"


@pytest.fixture
def writer(key_client):
    return key_client(["webhooks:read", "webhooks:write"])


def test_no_key_is_refused_with_401(api_client):
    assert api_client.get(LIST).status_code == 401
    assert api_client.post(LIST, {"url": "https://example.com/h"}, format="json").status_code == 401


def test_read_scope_cannot_create_and_other_scopes_cannot_read(key_client):
    assert key_client(["webhooks:read"]).post(LIST, {"url": "https://x.example/h"}, format="json").status_code == 403
    assert key_client(["contacts:read"]).get(LIST).status_code == 403


def test_create_answers_201_with_the_secret_shown_once(writer, receiver):
    response = writer.post(LIST, {"url": receiver.url, "event_types": ["contact.created"]}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) >= 24
    assert "secret" not in writer.get(f"{LIST}/{body['id']}").json()
    assert all("secret" not in e for e in writer.get(LIST).json()["results"])


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "http://example.com:99999/h",
        "http://example.com:0/h",
        "http://svc:S3cr3t@127.0.0.1:9/hook",  # credentials: never sent, and kept in plain text
        "http://svc@127.0.0.1:9/hook",
    ],
)
def test_a_malformed_url_is_refused_with_400(writer, url):
    """Even where private targets are allowed (here, as in development), a URL whose port can
    never be reached is refused at once, not retried for days."""
    response = writer.post(LIST, {"url": url}, format="json")
    assert response.status_code == 400
    assert "url" in response.json()["error"]["fields"]
    assert not WebhookEndpoint.objects.exists()


def test_the_audit_log_keeps_an_endpoints_origin_and_a_digest_not_its_url(writer, receiver, key_client):
    """Receivers carry secrets in the path or the query (a token); audit rows are kept for ever
    and served by the audit API. Found by a review."""
    secret_url = f"{receiver.url}/catch/sk_live_ABC123?token=tok_XYZ789"
    created = writer.post(LIST, {"url": secret_url}, format="json")
    assert created.status_code == 201
    moved = writer.patch(f"{LIST}/{created.json()['id']}", {"url": f"{receiver.url}?token=tok_NEW456"}, format="json")
    assert moved.status_code == 200
    audit = key_client(["audit:read"]).get(
        "/api/v1/audit", {"object": f"integrations.webhookendpoint:{created.json()['id']}"}
    )
    text = json.dumps(audit.json())
    assert audit.status_code == 200 and "webhook_endpoint.update" in text
    for secret in ("sk_live_ABC123", "tok_XYZ789", "tok_NEW456"):
        assert secret not in text
    assert receiver.url.split("//")[1].split("/")[0] in text  # the origin is there, for a person to read


def test_a_private_address_is_refused_when_the_setting_says_so(writer, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    for url in ("http://127.0.0.1:8000/h", "http://localhost/h", "http://10.1.2.3/h", "http://169.254.169.254/x"):
        response = writer.post(LIST, {"url": url}, format="json")
        assert response.status_code == 400, url
        assert "private" in response.json()["error"]["fields"]["url"][0]
    assert not WebhookEndpoint.objects.exists()


def test_unknown_event_types_are_refused_and_seed_names_accepted(writer, receiver):
    bad = writer.post(LIST, {"url": receiver.url, "event_types": ["contact.exploded"]}, format="json")
    assert bad.status_code == 400 and "event_types" in bad.json()["error"]["fields"]
    good = writer.post(LIST, {"url": receiver.url, "event_types": ["lead_status_updated"]}, format="json")
    assert good.json()["event_types"] == ["lead.status_changed"]


def test_patch_changes_fields_and_delete_disables(writer, receiver):
    pk = writer.post(LIST, {"url": receiver.url}, format="json").json()["id"]
    response = writer.patch(f"{LIST}/{pk}", {"description": "CRM", "rate_limit_per_minute": 60}, format="json")
    assert (response.status_code, response.json()["description"]) == (200, "CRM")
    assert writer.delete(f"{LIST}/{pk}").status_code == 204
    endpoint = WebhookEndpoint.objects.get(pk=pk)
    assert (endpoint.enabled, endpoint.needs_attention, endpoint.rate_limit_per_minute) == (False, False, 60)


def test_a_key_sees_only_its_own_endpoints(writer, key_client, receiver):
    pk = writer.post(LIST, {"url": receiver.url}, format="json").json()["id"]
    other = key_client(["webhooks:read", "webhooks:write"])
    assert other.get(f"{LIST}/{pk}").status_code == 404
    assert other.get(LIST).json()["results"] == []
    assert other.post(f"{LIST}/{pk}/test").status_code == 404


def test_the_test_route_sends_a_signed_test_event_and_reports_the_result(writer, receiver):
    created = writer.post(LIST, {"url": receiver.url}, format="json").json()
    receiver.respond(503)
    response = writer.post(f"{LIST}/{created['id']}/test")
    assert response.status_code == 200
    assert (response.json()["succeeded"], response.json()["status_code"]) == (False, 503)
    body = verified(created["secret"], receiver.requests[0])
    assert body["type"] == "webhook.test" and body["data"]["endpoint_id"] == created["id"]
    assert writer.get(f"{LIST}/{created['id']}/deliveries").json()["results"][0]["status_code"] == 503
    stats = writer.get(f"{LIST}/{created['id']}/stats").json()
    assert (stats["total"], stats["success_rate"], stats["test_sends"]) == (0, None, 1)  # not a delivery


def _real_and_test_sends(writer, receiver, publish, url: str) -> tuple[int, WebhookDelivery]:
    """An endpoint created at `url` with one real delivery (an outbox message, relayed: 200)
    and three test sends (503, 503, and a 200 after 0.3 s): its id and the real delivery."""
    from integrations import relay

    pk = writer.post(url, {"url": receiver.url}, format="json").json()["id"]
    publish("contact.updated", 1)
    relay.outbox_relay(budget_seconds=10)
    receiver.timeout_seconds = 0.3
    receiver.respond(503, 503, "timeout")
    for _ in range(3):
        assert writer.post(f"{SEED}/test/{pk}").status_code == 200
    assert WebhookDelivery.objects.filter(endpoint_id=pk).count() == 4
    return pk, WebhookDelivery.objects.get(endpoint_id=pk, message_id__isnull=False)


def test_stats_describe_real_deliveries_and_count_test_sends_apart(writer, receiver, publish):
    """Test sends (POST .../test) counted in the success rate and p95 latency: two failed tests
    made an endpoint whose every delivery succeeded read 50%, and a slow one set its p95."""
    pk, real = _real_and_test_sends(writer, receiver, publish, LIST)
    assert real.succeeded
    stats = writer.get(f"{LIST}/{pk}/stats").json()
    assert stats == {
        "total": 1,
        "succeeded": 1,
        "failed": 0,
        "success_rate": 1.0,
        "p95_latency_ms": float(real.latency_ms),
        "test_sends": 3,
    }


# ----------------------------------------------------------------------------- seed 003


SEED = "/api/integrations/webhooks"


def test_seed_routes_refuse_anonymous_callers(api_client):
    for method, url in (("post", f"{SEED}/endpoints"), ("get", f"{SEED}/stats/"), ("get", f"{SEED}/stats/1")):
        assert getattr(api_client, method)(url).status_code == 401
    assert api_client.post(f"{SEED}/test/1").status_code == 401


def test_seed_registration_takes_its_own_secret_and_underscore_events(writer, receiver, system_actor):
    body = {"name": "External CRM", "url": receiver.url, "events": ["assessment_completed", "lead_status_updated"]}
    response = writer.post(f"{SEED}/endpoints", {**body, "secret": "webhook-secret-of-theirs"}, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["events"] == ["assessment.completed", "lead.status_changed"]
    assert created["name"] == "External CRM" and created["active"] is True

    test = writer.post(f"{SEED}/test/{created['id']}")
    assert test.status_code == 200 and test.json()["success"] is True
    [request] = receiver.requests
    verified(created["secret"], request)  # the whsec_ form verifies with the standard library
    # ...and the seed's own verifier, keyed by the raw secret it chose, agrees.
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    mac = base64.b64encode(hmac.new(b"webhook-secret-of-theirs", signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{mac}"


def test_seed_003_registration_example_verbatim_and_all_six_event_names(writer, receiver):
    """The README's registerEndpoint example as written (its url aside: the fake receiver), then
    the six underscore event names it lists; /stats without the slash (`:endpointId?` left out)."""
    body = {"name": "External CRM", "url": receiver.url, "events": ["assessment_completed", "consultation_scheduled"]}
    response = writer.post(f"{SEED}/endpoints", {**body, "secret": "webhook-secret"}, format="json")
    assert response.status_code == 201, response.json()
    assert set(response.json()) >= {"id", "name", "url", "events", "active", "secret"}
    six = [
        "assessment_completed",
        "lead_captured",
        "consultation_requested",
        "consultation_scheduled",
        "email_engagement",
        "lead_status_updated",
    ]
    response = writer.post(f"{SEED}/endpoints", {"name": "All", "url": receiver.url, "events": six}, format="json")
    assert response.status_code == 201, response.json()
    assert len(set(response.json()["events"])) == 6 and all("." in e for e in response.json()["events"])
    bare = writer.get(f"{SEED}/stats")
    assert bare.status_code == 200 and bare.json() == writer.get(f"{SEED}/stats/").json()


def test_seed_registration_refuses_a_short_secret_and_unknown_events(writer, receiver):
    short = writer.post(f"{SEED}/endpoints", {"url": receiver.url, "secret": "abc"}, format="json")
    assert short.status_code == 400 and "secret" in short.json()["error"]["fields"]
    unknown = writer.post(f"{SEED}/endpoints", {"url": receiver.url, "events": ["page_exploded"]}, format="json")
    assert unknown.status_code == 400


def test_seed_stats_per_endpoint_and_overall(writer, receiver, publish):
    from integrations import relay
    from tests.fakes.webhook_receiver import WebhookReceiver

    with WebhookReceiver() as other:
        first = writer.post(f"{SEED}/endpoints", {"url": receiver.url}, format="json").json()["id"]
        second = writer.post(f"{SEED}/endpoints", {"url": other.url}, format="json").json()["id"]
        receiver.respond(200, 500)
        publish("contact.updated", 1)
        publish("contact.updated", 2)
        relay.outbox_relay(budget_seconds=10)
    one = writer.get(f"{SEED}/stats/{first}").json()
    assert (one["endpointId"], one["totalDeliveries"], one["successfulDeliveries"], one["successRate"]) == (
        first,
        2,
        1,
        0.5,
    )
    assert one["p95LatencyMs"] is not None
    everything = writer.get(f"{SEED}/stats/").json()
    assert (everything["totalDeliveries"], everything["failedDeliveries"]) == (4, 1)
    assert [e["endpointId"] for e in everything["endpoints"]] == [first, second]
    assert WebhookDelivery.objects.count() == 4


def test_seed_stats_leave_test_sends_out_of_the_rate_and_the_latency(writer, receiver, publish):
    pk, real = _real_and_test_sends(writer, receiver, publish, f"{SEED}/endpoints")
    expected = {
        "endpointId": pk,
        "totalDeliveries": 1,
        "successfulDeliveries": 1,
        "failedDeliveries": 0,
        "successRate": 1.0,
        "p95LatencyMs": float(real.latency_ms),
        "testDeliveries": 3,
    }
    assert writer.get(f"{SEED}/stats/{pk}").json() == expected
    everything = writer.get(f"{SEED}/stats").json()
    assert everything["endpoints"] == [expected]
    assert {name: value for name, value in everything.items() if name != "endpoints"} == {
        **expected,
        "endpointId": None,
    }


def test_only_a_caller_who_may_read_medical_fields_may_send_them_to_an_endpoint(writer, key_client, receiver):
    """webhooks:write alone cannot turn medical fields on, choose them, or move an endpoint that
    receives them (403, nothing changed); it may turn them off. phi:read may do all of it."""
    for body in ({"may_receive_phi": True}, {"phi_fields": ["persona"]}):
        response = writer.post(LIST, {"url": receiver.url, **body}, format="json")
        assert response.status_code == 403 and "phi:read" in response.json()["error"]["message"], body
    assert not WebhookEndpoint.objects.exists()
    trusted = key_client(["webhooks:read", "webhooks:write", "phi:read"])
    response = trusted.post(
        LIST, {"url": receiver.url, "may_receive_phi": True, "phi_fields": ["persona"]}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert (response.json()["may_receive_phi"], response.json()["phi_fields"]) == (True, ["persona"])

    pk = writer.post(LIST, {"url": receiver.url}, format="json").json()["id"]
    WebhookEndpoint.objects.filter(pk=pk).update(may_receive_phi=True, phi_fields=["persona"])  # as staff set it
    for body in ({"url": receiver.url + "elsewhere"}, {"phi_fields": ["persona", "assessment"]}):
        assert writer.patch(f"{LIST}/{pk}", body, format="json").status_code == 403, body
    assert writer.patch(f"{LIST}/{pk}", {"description": "partner"}, format="json").status_code == 200
    assert writer.patch(f"{LIST}/{pk}", {"may_receive_phi": False}, format="json").status_code == 200
    endpoint = WebhookEndpoint.objects.get(pk=pk)
    assert (endpoint.url, endpoint.phi_fields, endpoint.may_receive_phi) == (receiver.url, ["persona"], False)
    assert writer.patch(f"{LIST}/{pk}", {"url": receiver.url + "moved"}, format="json").status_code == 200


@pytest.mark.parametrize(("route", "body"), [(LIST, {}), (f"{SEED}/endpoints", {"name": "Partner"})])
def test_a_registration_sent_again_with_its_key_replays_without_storing_the_secret(writer, receiver, route, body):
    """Idempotency-Key on the registration routes: the retry answers the first response (the
    same endpoint and secret, Idempotent-Replayed) and registers nothing more; the stored
    response keeps no secret (it is read again from the endpoint's encrypted column)."""
    from django.db import connection

    sent = json.dumps({"url": receiver.url, **body}).encode()  # these exact bytes, twice

    def register():
        return writer.post(route, sent, content_type="application/json", HTTP_IDEMPOTENCY_KEY="reg-1")

    first, again = register(), register()
    assert first.status_code == again.status_code == 201, first.json()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert again.json() == first.json() and first.json()["secret"].startswith("whsec_")
    assert WebhookEndpoint.objects.count() == 1
    from crm_platform.models import IdempotencyRecord

    stored = json.dumps(IdempotencyRecord.objects.get(key="reg-1").response_body)  # decrypted
    assert str(first.json()["id"]) in stored and first.json()["secret"] not in stored and "secret" not in stored
    # The stored hash of the request is keyed: no offline guessing of a secret the caller chose.
    with connection.cursor() as cursor:
        cursor.execute("SELECT request_hash FROM crm_platform_idempotencyrecord WHERE key = 'reg-1'")
        [(request_hash,)] = cursor.fetchall()
    assert request_hash != hashlib.sha256(f"POST {route}\n".encode() + sent).hexdigest()
    other = writer.post(route, {"url": receiver.url + "x"}, format="json", HTTP_IDEMPOTENCY_KEY="reg-1")
    assert other.status_code == 422


@pytest.mark.parametrize("route", [LIST + "/{pk}/test", SEED + "/test/{pk}"])
def test_a_test_send_sent_again_with_its_key_sends_once(writer, receiver, route):
    pk = writer.post(LIST, {"url": receiver.url}, format="json").json()["id"]
    first = writer.post(route.format(pk=pk), HTTP_IDEMPOTENCY_KEY="test-1")
    again = writer.post(route.format(pk=pk), HTTP_IDEMPOTENCY_KEY="test-1")
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(receiver.requests) == 1 and WebhookDelivery.objects.count() == 1


def test_a_client_turns_its_endpoint_off_and_on_again_after_a_system_disable(writer, receiver):
    pk = writer.post(LIST, {"url": receiver.url}, format="json").json()["id"]
    assert writer.post(LIST, {"url": receiver.url, "enabled": False}, format="json").status_code == 400
    WebhookEndpoint.objects.filter(pk=pk).update(enabled=False, needs_attention=True, disabled_reason="410 Gone")
    response = writer.patch(f"{LIST}/{pk}", {"enabled": True, "description": "fixed"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["enabled"], body["needs_attention"], body["disabled_reason"], body["description"]) == (
        True,
        False,
        "",
        "fixed",
    )
    off = writer.patch(f"{LIST}/{pk}", {"enabled": False}, format="json").json()
    assert (off["enabled"], off["needs_attention"]) == (False, False)


def test_a_rotated_secret_signs_beside_the_old_one_until_the_overlap_ends(writer, receiver):
    """CONTRACTS: several space-separated signatures during secret rotation. Each secret alone
    verifies the message (an independent verifier); after the overlap, or with none, only the
    new one signs."""
    from django.utils import timezone
    from standardwebhooks.webhooks import WebhookVerificationError

    from compliance.models import AuditEvent

    created = writer.post(LIST, {"url": receiver.url}, format="json").json()
    pk, old = created["id"], created["secret"]
    rotate = f"{LIST}/{pk}/rotate-secret"
    rotated = writer.post(rotate, {}, format="json", HTTP_IDEMPOTENCY_KEY="rot-1")
    assert rotated.status_code == 200, rotated.json()
    new, until = rotated.json()["secret"], rotated.json()["previous_secret_until"]
    assert new.startswith("whsec_") and new != old and until is not None
    replay = writer.post(rotate, {}, format="json", HTTP_IDEMPOTENCY_KEY="rot-1")
    assert replay.json()["secret"] == new and replay.headers["Idempotent-Replayed"] == "true"
    assert "secret" not in writer.get(f"{LIST}/{pk}").json()

    def test_send():
        assert writer.post(f"{LIST}/{pk}/test").status_code == 200
        return receiver.requests[-1]

    both = test_send()
    assert len(both.headers["webhook-signature"].split(" ")) == 2
    assert verified(new, both)["type"] == verified(old, both)["type"] == "webhook.test"
    WebhookEndpoint.objects.filter(pk=pk).update(previous_secret_until=timezone.now() - timezone.timedelta(seconds=1))
    ended = test_send()
    assert len(ended.headers["webhook-signature"].split(" ")) == 1 and verified(new, ended)
    with pytest.raises(WebhookVerificationError):
        verified(old, ended)

    leaked = writer.post(rotate, {"overlap_hours": 0}, format="json").json()
    assert leaked["previous_secret_until"] is None
    alone = test_send()
    assert len(alone.headers["webhook-signature"].split(" ")) == 1 and verified(leaked["secret"], alone)
    with pytest.raises(WebhookVerificationError):
        verified(new, alone)
    assert writer.post(rotate, {"secret": "short"}, format="json").status_code == 400
    assert AuditEvent.objects.filter(action="webhook_endpoint.rotate_secret").count() == 2


def test_an_old_secret_is_forgotten_by_the_nightly_retention_job_once_its_overlap_is_over(writer, receiver):
    from django.utils import timezone

    from compliance.tasks import retention_purge

    pk = writer.post(LIST, {"url": receiver.url}, format="json").json()["id"]
    writer.post(f"{LIST}/{pk}/rotate-secret", {}, format="json")
    other = writer.post(LIST, {"url": receiver.url}, format="json").json()["id"]
    writer.post(f"{LIST}/{other}/rotate-secret", {}, format="json")
    WebhookEndpoint.objects.filter(pk=pk).update(previous_secret_until=timezone.now() - timezone.timedelta(minutes=1))
    assert retention_purge.apply().get()["integrations.webhookendpoint.previous_secret"] == 1
    ended, running = WebhookEndpoint.objects.get(pk=pk), WebhookEndpoint.objects.get(pk=other)
    assert (ended.previous_secret, ended.previous_secret_until) == (None, None)
    assert running.previous_secret and running.previous_secret_until > timezone.now()


def test_what_a_client_may_switch_back_on(writer, key_client, receiver):
    """A client may enable its endpoint after a system disable (whose admin notice is then
    resolved) or its own; not after staff disabled it, and an endpoint receiving medical
    fields only with phi:read, which also guards subscribing it to more event types."""
    from compliance.models import AdminNotice
    from crm_platform.actor import Actor
    from integrations.webhooks import endpoint_disable

    pk = writer.post(LIST, {"url": receiver.url, "event_types": ["lead.captured"]}, format="json").json()["id"]
    endpoint = WebhookEndpoint.objects.get(pk=pk)
    endpoint_disable(endpoint=endpoint, reason="410 Gone", actor=Actor.system("webhooks"), by_system=True)
    assert AdminNotice.objects.filter(source="webhooks", resolved_at__isnull=True).count() == 1
    assert writer.patch(f"{LIST}/{pk}", {"enabled": True}, format="json").status_code == 200
    assert not AdminNotice.objects.filter(source="webhooks", resolved_at__isnull=True).exists()

    WebhookEndpoint.objects.filter(pk=pk).update(enabled=False, disabled_reason="disabled by staff")
    refused = writer.patch(f"{LIST}/{pk}", {"enabled": True}, format="json")
    assert refused.status_code == 403 and "Staff" in refused.json()["error"]["message"]

    WebhookEndpoint.objects.filter(pk=pk).update(
        enabled=False, disabled_reason="410 Gone", needs_attention=True, may_receive_phi=True, phi_fields=["persona"]
    )
    assert writer.patch(f"{LIST}/{pk}", {"enabled": True}, format="json").status_code == 403
    assert (
        writer.patch(f"{LIST}/{pk}", {"event_types": ["lead.captured", "deal.won"]}, format="json").status_code == 403
    )
    assert writer.patch(f"{LIST}/{pk}", {"event_types": []}, format="json").status_code == 403  # [] is every type
    assert writer.patch(f"{LIST}/{pk}", {"description": "still fine"}, format="json").status_code == 200
    assert (
        writer.patch(f"{LIST}/{pk}", {"event_types": ["lead_captured"]}, format="json").status_code == 200
    )  # seed name
    assert not WebhookEndpoint.objects.get(pk=pk).enabled


def test_staff_who_switch_an_endpoint_off_through_the_api_keep_it_off_for_its_client(writer, admin_user, receiver):
    from rest_framework.test import APIClient

    pk = writer.post(LIST, {"url": receiver.url}, format="json").json()["id"]
    staff = APIClient()
    staff.force_login(admin_user)
    assert staff.patch(f"{LIST}/{pk}", {"enabled": False}, format="json").status_code == 200
    assert writer.patch(f"{LIST}/{pk}", {"enabled": True}, format="json").status_code == 403
    assert writer.delete(f"{LIST}/{pk}").status_code == 204  # already off: nothing changes
    assert WebhookEndpoint.objects.get(pk=pk).disabled_reason == "disabled by staff"
    assert staff.patch(f"{LIST}/{pk}", {"enabled": True}, format="json").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_phi_check_judges_the_endpoint_as_it_is_when_the_change_lands(writer, receiver):
    """Medical fields switched on (by someone who may) while a webhooks:write-only client moves
    the endpoint: the move waits for that change and is then refused, instead of passing a check
    made on the endpoint as it was before."""
    from tests.support import behind_a_lock

    pk = writer.post(LIST, {"url": receiver.url}, format="json").json()["id"]
    answer = behind_a_lock(
        "UPDATE integrations_webhookendpoint SET may_receive_phi = true, phi_fields = '{persona}' WHERE id = %s",
        [pk],
        lambda: writer.patch(f"{LIST}/{pk}", {"url": receiver.url + "elsewhere"}, format="json"),
    )
    assert answer.status_code == 403, answer.content
    endpoint = WebhookEndpoint.objects.get(pk=pk)
    assert (endpoint.url, endpoint.may_receive_phi) == (receiver.url, True)


@pytest.mark.django_db(transaction=True)
def test_a_patch_looks_the_new_host_up_before_it_locks_the_endpoint(writer, receiver, settings):
    """A lookup may take seconds: the relay's batches (which update the endpoint's failure
    state) must not wait on a PATCH that is still looking up its new host."""
    import threading

    from django.db import connection

    from tests.fakes.dns import FakeDns
    from tests.support import other_connection, wait_until

    pk = writer.post(LIST, {"url": receiver.url}, format="json").json()["id"]
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    answers = []

    def move():
        try:
            answers.append(writer.patch(f"{LIST}/{pk}", {"url": "https://hooks.partner.test/in"}, format="json"))
        finally:
            connection.close()

    with FakeDns({"hooks.partner.test": ["93.184.216.34"]}, slow={"hooks.partner.test": 1}) as dns:
        mover = threading.Thread(target=move)
        mover.start()
        wait_until(lambda: dns.lookups)
        with other_connection() as relay_like:  # raises LockNotAvailable if the row is held
            relay_like.execute("SELECT 1 FROM integrations_webhookendpoint WHERE id = %s FOR UPDATE NOWAIT", [pk])
            relay_like.rollback()
        mover.join(timeout=10)
    assert answers and answers[0].status_code == 200, answers and answers[0].content
    assert WebhookEndpoint.objects.get(pk=pk).url == "https://hooks.partner.test/in"
