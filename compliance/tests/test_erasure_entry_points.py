"""GDPR erasure after a person has been through every real entry point (events, the seed 002
route, API writes with Idempotency-Keys, webhooks delivered to a receiver that quotes the body
back, consents, an export), then erasure by the API: no table may still hold any of their
identifiers or medical values. And what comes after an erasure (events still arriving)."""

from __future__ import annotations

import pytest

from compliance.tasks import export_build
from compliance.tests.test_erasure import assert_nothing_left
from contacts.models import Contact
from crm_platform.models import OutboxMessage
from crm_platform.redis import get_redis
from integrations import relay
from integrations import services as integrations
from integrations.models import WebhookDelivery
from integrations.tasks import inbox_apply
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events"
APP_EVENT = "/api/crm/webhooks/app-event"
EMAIL = "hedda.wiped@example.com"
PHONE = "+14155550199"
USER = "app-user-wipe-1"
# Medical values the person's records carry (markers: found by a text scan of every column).
MEDICAL = ("MEDX-semaglutide", "MEDX-plan-glp1", "MEDX-knee", "MEDX-ticket", "MEDX-persona", "MEDX-reason")


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_TIMEOUT_SECONDS = 2
    settings.WEBHOOK_RESOLVER = "tests.fakes.dns.resolve"
    with WebhookReceiver() as fake:
        fake.echo = True  # a receiver quoting the body back ("invalid payload: {...}")
        yield fake


def _post_event(client, body, key):
    response = client.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 202, response.content
    return response


def _fill_everything(key_client, system_actor, receiver, django_capture_on_commit_callbacks) -> Contact:
    """One person, through the entry points a real deployment uses."""
    integrations.webhook_endpoint_create(url=receiver.url, actor=system_actor)
    integrations.webhook_endpoint_create(
        url=receiver.url.replace("/hook", "/phi"),
        actor=system_actor,
        may_receive_phi=True,
        phi_fields=["persona", "plan", "assessment"],
    )
    app = key_client(["events:write", "events:read"], name="mobile app")
    writer = key_client(
        ["contacts:write", "contacts:read", "tickets:write", "leads:write", "consents:write", "phi:read"],
        name="writer",
    )
    user = {"external_id": USER, "email": EMAIL}
    _post_event(
        app, {"type": "account_created", "user": user, "properties": {"first_name": "Hedda", "last_name": "Wiped"}}, "a"
    )
    _post_event(
        app,
        {
            "type": "assessment_completed",
            "user": user,
            "properties": {"persona": "MEDX-persona", "readinessScore": 77, "answers": {"q1": "MEDX-knee"}},
        },
        "b",
    )
    _post_event(app, {"type": "treatment_plan_updated", "user": user, "properties": {"plan": "MEDX-plan-glp1"}}, "c")
    _post_event(
        app,
        {"type": "prescription_approved", "user": user, "properties": {"medication": "MEDX-semaglutide"}},
        "d",
    )
    seed = {
        "entityType": "food_log",
        "operation": "create",
        "userId": USER,
        "externalId": "food-wipe-1",
        "payload": {"food_name": "Hedda's lunch", "calories": 450},
    }
    assert app.post(APP_EVENT, seed, format="json", HTTP_IDEMPOTENCY_KEY="seed-1").status_code == 202
    inbox_apply()
    contact = Contact.objects.get(external_id=USER)
    # API writes with Idempotency-Keys (stored responses).
    assert (
        writer.patch(
            f"/api/v1/contacts/{contact.pk}",
            {"phone": PHONE, "city": "Trondheim"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="p-1",
        ).status_code
        == 200
    )
    note = {"contact": contact.pk, "body": "MEDX-knee pain, Hedda"}
    assert writer.post("/api/v1/notes", note, format="json", HTTP_IDEMPOTENCY_KEY="n-1").status_code == 201
    ticket = {"contact": contact.pk, "subject": "Hedda refill", "body": "MEDX-ticket"}
    assert writer.post("/api/v1/tickets", ticket, format="json", HTTP_IDEMPOTENCY_KEY="t-1").status_code == 201
    lead = {"email": EMAIL, "source": "website_form", "first_name": "Hedda", "persona": "MEDX-persona"}
    response = writer.post("/api/v1/leads", lead, format="json", HTTP_IDEMPOTENCY_KEY="l-1")
    assert response.status_code in (200, 201), response.content
    consents = {
        "consents": [
            {
                "purpose": "marketing_email",
                "granted": True,
                "source": "app settings",
                "ip": "203.0.113.9",
                "user_agent": "HeddaPhone/1.0",
            }
        ]
    }
    assert writer.put(f"/api/v1/contacts/{contact.pk}/consents", consents, format="json").status_code == 200
    # Webhooks delivered (the echoing receiver's answers land in the delivery log).
    relay.outbox_relay(budget_seconds=20)
    assert WebhookDelivery.objects.filter(succeeded=True).exists()
    # An export, built and downloaded.
    gdpr = key_client(["gdpr:write", "phi:read"], name="dpo")
    with django_capture_on_commit_callbacks():
        bundle = gdpr.post(f"/api/v1/contacts/{contact.pk}/export", HTTP_IDEMPOTENCY_KEY="x-1")
    assert bundle.status_code == 202, bundle.content
    assert export_build.apply(args=[bundle.json()["id"]]).get() == "ready"
    state = gdpr.get(f"/api/v1/exports/{bundle.json()['id']}").json()
    assert gdpr.get(state["download_url"]).status_code == 200
    # One more event still queued when the erasure comes.
    _post_event(app, {"type": "consultation_submitted", "user": user, "properties": {"reason": "MEDX-reason"}}, "e")
    return contact


def test_after_erasure_through_every_entry_point_no_table_holds_the_person(
    key_client, system_actor, receiver, django_capture_on_commit_callbacks
):
    contact = _fill_everything(key_client, system_actor, receiver, django_capture_on_commit_callbacks)
    values = (EMAIL, PHONE, USER, "Hedda", "Wiped", "Trondheim", "HeddaPhone", *MEDICAL)
    with pytest.raises(AssertionError):  # the walk sees the person before the erasure
        assert_nothing_left([contact.pk], values=values)
    gdpr = key_client(["gdpr:write"], name="eraser")
    with django_capture_on_commit_callbacks(execute=True):
        assert gdpr.post(f"/api/v1/contacts/{contact.pk}/erase").status_code == 200
    # The outbox then delivers contact.deleted ({"id"} only) to every endpoint.
    relay.outbox_relay(budget_seconds=20)
    inbox_apply()
    assert_nothing_left([contact.pk], values=values)
    # Nor Redis (Celery results are not kept; counters and rate limits name fields and keys only).
    redis = get_redis()
    for name in redis.scan_iter(count=1000):
        kind = redis.type(name).decode()
        dump = {"string": redis.get, "hash": redis.hgetall, "list": lambda n: redis.lrange(n, 0, -1)}.get(
            kind, lambda n: redis.dump(n)
        )(name)
        text = repr((name, dump))
        assert not [v for v in values if v.lower() in text.lower()], text
    assert not OutboxMessage.objects.exclude(topic="contact.deleted").filter(status="pending").exists()


@pytest.mark.parametrize(
    "event",
    [
        {"type": "page_viewed", "properties": {"path": "/plans"}},
        {"type": "profile_updated", "properties": {"first_name": "Hedda"}},
        {"type": "assessment_completed", "properties": {"persona": "MEDX-persona"}},
    ],
    ids=lambda e: e["type"],
)
def test_an_erased_app_user_does_not_come_back_through_a_later_event(key_client, system_actor, event):
    """The app keeps sending for a while (offline queues, retries): an event naming the erased
    person by their app user id alone was accepted and made a new contact with that id, their
    timeline starting again, although only a sign-up (account_created) is meant to bring an
    erased person back."""
    from contacts import services as contacts

    contact = contacts.contact_create(actor=system_actor, email=EMAIL, external_id=USER, first_name="Hedda")
    gdpr = key_client(["gdpr:write"], name="eraser")
    assert gdpr.delete(f"/api/crm/users/{USER}").status_code == 200
    app = key_client(["events:write", "events:read"], name="mobile app")
    response = app.post(EVENTS, {**event, "user": {"external_id": USER}}, format="json", HTTP_IDEMPOTENCY_KEY="late")
    inbox_apply()
    assert not Contact.objects.filter(external_id=USER).exists()
    assert response.status_code == 400, response.content
    assert "external_id" in str(response.json()["error"]["fields"])
    assert contact.pk not in Contact.objects.values_list("pk", flat=True)


def test_an_erased_app_user_signing_up_again_comes_back(key_client, system_actor):
    """A sign-up is the person's own new decision: it is accepted (the erasure's ledger does not block it)."""
    from contacts import services as contacts

    contacts.contact_create(actor=system_actor, email=EMAIL, external_id=USER)
    gdpr = key_client(["gdpr:write"], name="eraser")
    assert gdpr.delete(f"/api/crm/users/{USER}").status_code == 200
    app = key_client(["events:write", "events:read"], name="mobile app")
    body = {"type": "account_created", "user": {"external_id": USER, "email": EMAIL}}
    assert app.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="again").status_code == 202
    inbox_apply()
    assert Contact.objects.filter(external_id=USER, email=EMAIL).exists()


def test_an_event_queued_past_the_erasure_fails_when_applied_instead_of_making_them_again(key_client, system_actor):
    """The door's check and the inbox INSERT are two steps: an event checked while the person
    still existed can be queued just after their erasure (which removes the queued ones it
    finds). Applied, it would have made a new contact with their app user id; the suppression
    of that id stops it there too."""
    from contacts import services as contacts
    from crm_platform.actor import Actor
    from integrations.inbound import event_parse
    from integrations.inbox import Entry, inbox_accept
    from integrations.models import InboundEvent

    contacts.contact_create(actor=system_actor, email=EMAIL, external_id=USER)
    assert key_client(["gdpr:write"], name="eraser").delete(f"/api/crm/users/{USER}").status_code == 200
    late = event_parse({"type": "page_viewed", "user": {"external_id": USER}, "properties": {"path": "/x"}})
    [queued] = inbox_accept(
        owner="key:late", route="event", actor=Actor.system("tests"), entries=[Entry("late", "f" * 64, late)]
    )
    inbox_apply()
    row = InboundEvent.objects.get(pk=queued.id)
    assert row.status == "failed" and "external_id" in str(row.result), row.result
    assert not Contact.objects.filter(external_id=USER).exists()
