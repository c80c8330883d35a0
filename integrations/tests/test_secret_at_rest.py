"""Webhook signing secrets are encrypted at rest and still sign deliveries."""

import pytest
from django.db import connection

from integrations import relay
from integrations.tests.conftest import verified

pytestmark = pytest.mark.django_db


def test_the_stored_secret_is_a_token_not_the_secret_and_deliveries_still_verify(make_endpoint, publish, receiver):
    endpoint, secret = make_endpoint(event_types=["contact.updated"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM integrations_webhookendpoint WHERE id = %s", [endpoint.pk])
        (stored,) = cursor.fetchone()
    assert secret not in stored and secret.removeprefix("whsec_") not in stored
    publish(topic="contact.updated", object_id=7, payload={"id": 7})
    relay.outbox_relay(budget_seconds=5)
    assert len(receiver.requests) == 1
    assert verified(secret, receiver.requests[0])["data"]["id"] == 7
