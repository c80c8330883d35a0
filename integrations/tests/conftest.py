import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from crm_platform.models import OutboxMessage
from integrations import services
from tests.fakes.webhook_receiver import WebhookReceiver


@pytest.fixture(autouse=True)
def _private_targets_allowed(settings):
    """The receiver listens on loopback; tests that check the SSRF guard switch this off."""
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_TIMEOUT_SECONDS = 2
    # No real DNS in tests: names resolve only through tests.fakes.dns.FakeDns.
    settings.WEBHOOK_RESOLVER = "tests.fakes.dns.resolve"


@pytest.fixture(autouse=True)
def _no_unreachable_addresses():
    """Webhook sends remember addresses that did not connect (per process): not across tests."""
    from integrations import webhooks

    webhooks._unreachable.clear()
    yield
    webhooks._unreachable.clear()


@pytest.fixture
def app(key_client):
    """The app's own API key (events in, their outcomes out); a test module may define its own."""
    return key_client(["events:write", "events:read"], name="mobile app")


@pytest.fixture
def receiver():
    with WebhookReceiver() as fake:
        yield fake


@pytest.fixture
def make_endpoint(db, system_actor, receiver):
    """make_endpoint(**fields) -> (WebhookEndpoint, secret), pointing at the receiver by default."""

    def make(**fields):
        fields.setdefault("url", receiver.url)
        return services.webhook_endpoint_create(actor=system_actor, **fields)

    return make


@pytest.fixture
def publish(db):
    """publish(topic, object_id, payload) -> an unrouted outbox row, as outbox_publish writes it."""

    def make(topic="contact.updated", object_id="1", payload=None, object_type="contacts.contact"):
        return OutboxMessage.objects.create(
            topic=topic, object_type=object_type, object_id=str(object_id), payload=payload or {"id": int(object_id)}
        )

    return make


def verified(secret: str, request) -> dict:
    """What an independent Standard Webhooks implementation makes of a received request."""
    return Webhook(secret).verify(request.body, request.headers)


def verified_by_secret(requests, *secrets: str) -> dict[str, dict]:
    """Several endpoints on one receiver: each request verified under the secret that signed
    it, as {secret: body} (one request per endpoint)."""
    found = {}
    for request in requests:
        for secret in secrets:
            try:
                found[secret] = verified(secret, request)
            except WebhookVerificationError:  # signed with another endpoint's secret
                continue
    return found
