"""Medical fields in the machinery's own tables: the outbox and the webhook delivery log.

README (compliance): "Medical fields are encrypted in the application", they leave only through
allow-listed channels, and erasure leaves no personal value in any text or JSON column. These
tests put a marker in a medical field through the real API and look where it ends up.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from contacts.tests.factories import ContactFactory
from integrations import services as webhooks
from integrations import tasks
from integrations.models import WebhookDelivery
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db

PLAN = "phimarkerglp1semaglutide"
PERSONA = "phimarkertype2diabetic"


@pytest.fixture(autouse=True)
def _loopback_webhooks(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_TIMEOUT_SECONDS = 2
    settings.WEBHOOK_RESOLVER = "tests.fakes.dns.resolve"


def _column_text(table: str, column: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce(string_agg({column}::text, ' '), '') FROM {table}")  # noqa: S608
        return cursor.fetchone()[0]


def test_outbox_payloads_keep_medical_fields_encrypted_at_rest(key_client):
    """A deal's plan, a subscription's plan and a lead's persona are encrypted in their own
    tables, but the outbox row each service writes in the same transaction holds them as
    plain JSON (kept 7 days once delivered; dead and pending rows are never purged)."""
    client = key_client(["contacts:write", "deals:write", "leads:write"])
    contact = ContactFactory(email="pat@example.com")
    assert (
        client.post(
            reverse("v1:deal-list"), {"name": "Pat", "contact": contact.pk, "plan": PLAN}, format="json"
        ).status_code
        == 201
    )
    response = client.post(reverse("v1:subscription-list"), {"contact": contact.pk, "plan": PLAN}, format="json")
    assert response.status_code == 201
    response = client.post(
        reverse("v1:lead-list"), {"email": "pat@example.com", "source": "api", "persona": PERSONA}, format="json"
    )
    assert response.status_code == 201

    # The models' own columns hold tokens only (the README's promise)...
    assert PLAN not in _column_text("leads_deal", "plan")
    assert PLAN not in _column_text("contacts_subscription", "plan")
    assert PERSONA not in _column_text("leads_lead", "persona")
    # ...the outbox must not hold them in the clear either.
    outbox = _column_text("crm_platform_outboxmessage", "payload")
    assert PLAN not in outbox and PERSONA not in outbox, "medical values in plaintext in the outbox"


def _echoed_delivery(key_client, system_actor):
    """A PHI-flagged endpoint (plan allowed) whose receiver answers 400 quoting the body, as
    receivers' validation errors often do; a subscription started through the API; the relay
    task run. Returns (endpoint, contact)."""
    contact = ContactFactory(email="pat@example.com", external_id="app-77")
    receiver = WebhookReceiver(default=400).start()
    receiver.echo = True
    endpoint, _ = webhooks.webhook_endpoint_create(
        actor=system_actor, url=receiver.url, may_receive_phi=True, phi_fields=["plan"]
    )
    client = key_client(["contacts:write"])
    assert (
        client.post(reverse("v1:subscription-list"), {"contact": contact.pk, "plan": PLAN}, format="json").status_code
        == 201
    )
    tasks.outbox_relay()
    tasks.outbox_relay()  # routed, then delivered
    receiver.stop()
    assert PLAN.encode() in receiver.requests[0].body  # the endpoint was allowed the plan
    return endpoint, contact


def test_webhook_delivery_log_does_not_keep_medical_values_a_receiver_echoes(key_client, system_actor):
    _echoed_delivery(key_client, system_actor)
    assert WebhookDelivery.objects.exists()
    assert PLAN not in _column_text("integrations_webhookdelivery", "response_excerpt")


def test_webhook_delivery_log_shows_no_medical_value_to_staff_without_view_phi(
    key_client, system_actor, django_user_model
):
    endpoint, _ = _echoed_delivery(key_client, system_actor)
    staff = django_user_model.objects.create_user(username="ops", password="a-long-test-password", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_webhookendpoint", "view_webhookdelivery"])
    )
    assert not staff.has_perm("compliance.view_phi")
    api = APIClient()
    api.force_login(staff)
    response = api.get(reverse("v1:webhook-endpoint-deliveries", args=[endpoint.pk]))
    assert response.status_code == 200
    assert PLAN not in response.content.decode(), "API: delivery log shows the plan without phi:read"
    delivery = WebhookDelivery.objects.get(event_type="subscription.started")
    page = api.get(reverse("admin:integrations_webhookdelivery_change", args=[delivery.pk]))
    assert page.status_code == 200
    assert PLAN not in page.content.decode(), "admin: delivery page shows the plan without view_phi"


def test_erasure_leaves_no_medical_value_in_the_webhook_delivery_log(key_client, system_actor):
    _, contact = _echoed_delivery(key_client, system_actor)
    gdpr = key_client(["gdpr:write"])
    assert gdpr.post(reverse("v1:contact-erase", args=[contact.pk]), format="json").status_code == 200
    left = _column_text("integrations_webhookdelivery", "response_excerpt")
    assert PLAN not in left and "pat@example.com" not in left, "the delivery log outlives the erasure"


def test_the_outbox_page_shows_a_sealed_payload_as_published_to_phi_staff_only(key_client, client, django_user_model):
    """Sealed at rest, the payload is opened for staff who may view PHI (and that view is
    audited); staff without the permission see no payload at all."""
    from django.contrib.auth.models import Group

    from compliance.models import AuditEvent
    from crm_platform.models import OutboxMessage

    api = key_client(["contacts:write", "deals:write"])
    contact = ContactFactory(email="pat@example.com")
    response = api.post(reverse("v1:deal-list"), {"name": "Pat", "contact": contact.pk, "plan": PLAN}, format="json")
    assert response.status_code == 201
    row = OutboxMessage.objects.get(topic="deal.created")
    page = reverse("admin:crm_platform_outboxmessage_change", args=[row.pk])
    staff = django_user_model.objects.create_user(username="ops", password="a-long-test-password", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_outboxmessage"))
    client.force_login(staff)
    html = client.get(page).content.decode()
    assert PLAN not in html and "payload" not in html.lower().split("<h1")[1]
    staff.groups.add(Group.objects.get(name="Compliance officer"))
    client.force_login(django_user_model.objects.get(pk=staff.pk))
    html = client.get(page).content.decode()
    assert PLAN in html and "_sealed" not in html
    assert AuditEvent.objects.filter(action="phi.read", object_id=str(row.pk)).exists()
