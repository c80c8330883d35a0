"""HubSpot's webhooks: v3 signatures, and contact.privacyDeletion running our erasure."""

import base64
import hashlib
import hmac
import json
import time

import pytest
from django.contrib.contenttypes.models import ContentType

from compliance.gdpr import legal_hold_place
from compliance.models_privacy import Erasure
from contacts.models import Activity, Contact, ExternalRef
from contacts.tests.factories import ContactFactory
from integrations.models import SyncEvent

pytestmark = pytest.mark.django_db
URL = "/api/integrations/hubspot/webhooks"
SECRET = "hubspot-app-client-secret"


@pytest.fixture(autouse=True)
def _secret(settings):
    settings.HUBSPOT_CLIENT_SECRET = SECRET


def post(client, events, *, secret=SECRET, age_ms=0, body=None):
    """POST as HubSpot does: signature over method + full URI + body + timestamp (ms)."""
    raw = body if body is not None else json.dumps(events).encode()
    timestamp = str(int(time.time() * 1000) - age_ms)
    uri = f"http://testserver{URL}"
    mac = hmac.new(secret.encode(), b"POST" + uri.encode() + raw + timestamp.encode(), hashlib.sha256).digest()
    return client.post(
        URL,
        raw,
        content_type="application/json",
        HTTP_X_HUBSPOT_SIGNATURE_V3=base64.b64encode(mac).decode(),
        HTTP_X_HUBSPOT_REQUEST_TIMESTAMP=timestamp,
    )


@pytest.fixture
def linked(system_actor):
    """A contact HubSpot knows as object 501, with a timeline."""
    from contacts.services import activity_record

    contact = ContactFactory(email="forget.me@example.com")
    ExternalRef.objects.create(
        provider="hubspot",
        object_type="contact",
        external_id="501",
        content_type=ContentType.objects.get_for_model(Contact),
        object_id=contact.pk,
    )
    activity_record(contact=contact, type="page_viewed", actor=system_actor, apply_lifecycle=False)
    return contact


def _deletion(object_id=501):
    return {"eventId": 1, "subscriptionType": "contact.privacyDeletion", "objectId": object_id, "attemptNumber": 0}


def test_a_privacy_deletion_erases_the_contact_like_every_other_channel(client, linked):
    response = post(client, [_deletion(), {"subscriptionType": "contact.propertyChange", "objectId": 501}])
    assert response.status_code == 200, response.content
    assert response.json() == {"erased": 1, "unknown": 0, "refused": 0, "ignored": 1}
    assert not Contact.objects.filter(pk=linked.pk).exists()
    assert not Activity.objects.filter(contact_id=linked.pk).exists()
    assert Erasure.objects.filter(contact_id=linked.pk).exists()
    event = SyncEvent.objects.get(provider="hubspot")
    assert (event.event_type, event.status, event.external_id) == ("contact.privacyDeletion", "applied", "501")
    # HubSpot redelivers: nothing left to erase, still a 2xx.
    again = post(client, [_deletion()])
    assert again.status_code == 200 and again.json()["unknown"] == 1


def test_a_contact_under_legal_hold_is_kept_and_the_refusal_is_in_the_sync_log(client, linked, system_actor):
    legal_hold_place(contact=linked, reason="litigation 7", actor=system_actor)
    response = post(client, [_deletion()])
    assert response.status_code == 200 and response.json()["refused"] == 1
    assert Contact.objects.filter(pk=linked.pk).exists()
    event = SyncEvent.objects.get(provider="hubspot")
    assert (event.status, event.last_error) == ("failed", "legal_hold")


@pytest.mark.parametrize(
    "kwargs",
    [{"secret": "someone-else"}, {"age_ms": 6 * 60 * 1000}],
    ids=["wrong secret", "older than five minutes"],
)
def test_unsigned_or_stale_requests_are_401_and_change_nothing(client, linked, kwargs):
    response = post(client, [_deletion()], **kwargs)
    assert response.status_code == 401 and response.json()["error"]["code"] == "bad_signature"
    assert Contact.objects.filter(pk=linked.pk).exists() and not SyncEvent.objects.exists()


def test_without_a_configured_secret_every_request_is_refused(client, linked, settings):
    settings.HUBSPOT_CLIENT_SECRET = ""
    response = post(client, [_deletion()], secret="")
    assert response.status_code == 401 and "HUBSPOT_CLIENT_SECRET" in response.json()["error"]["message"]
    assert Contact.objects.filter(pk=linked.pk).exists()


def test_a_signed_body_that_is_not_an_array_of_events_is_400(client):
    assert post(client, None, body=b'{"objectId": 1}').status_code == 400
    assert post(client, None, body=b"not json").status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        # A NUL in the objectId, which PostgreSQL text cannot hold.
        json.dumps([_deletion("50\u00001")]).encode(),
        # Values json.loads reads and the payload digest (orjson) cannot write.
        b'[{"subscriptionType": "contact.privacyDeletion", "objectId": 501, "eventId": 99999999999999999999999}]',
        b'[{"subscriptionType": "contact.privacyDeletion", "objectId": 501, "note": "\\ud800"}]',
        # Nesting beyond Python's recursion limit.
        b"[" * 50_000 + b"]" * 50_000,
    ],
    ids=["NUL objectId", "integer past 64 bits", "lone surrogate", "deep nesting"],
)
def test_a_signed_batch_with_values_we_cannot_store_is_a_json_4xx_and_changes_nothing(client, linked, body):
    client.raise_request_exception = False
    response = post(client, None, body=body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in ("parse_error", "invalid")
    assert Contact.objects.filter(pk=linked.pk).exists() and not SyncEvent.objects.exists()
