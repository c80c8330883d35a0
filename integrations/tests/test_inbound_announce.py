"""What outside systems hear of inbound events: assessment.completed (seed 003) from the
timeline path, through the outbox relay to a signed webhook, with medical fields only where
an endpoint is allowed them."""

import pytest

from integrations import relay
from integrations.models import WebhookEndpoint
from integrations.tasks import inbox_apply
from integrations.tests.conftest import verified_by_secret

pytestmark = pytest.mark.django_db
BATCH = "/api/v1/events/batch"


@pytest.fixture
def app(key_client):
    return key_client(["events:write"], name="assessment platform")


def test_a_completed_assessment_reaches_its_subscribers_with_medical_fields_only_where_allowed(
    app, make_endpoint, receiver
):
    _, plain_secret = make_endpoint(event_types=["assessment_completed"])  # seed 003's name
    allowed, allowed_secret = make_endpoint(
        event_types=["assessment.completed"], may_receive_phi=True, phi_fields=["assessment"]
    )
    make_endpoint(event_types=["lead.captured"])  # not subscribed: hears nothing of it
    properties = {
        "assessmentType": "strategic_readiness",
        "persona": "Strategic Contributor",
        "readinessScore": 75,
        "answers": {"sleep": "poor"},
    }
    events = [
        {"id": "a-1", "type": "assessment_completed", "user": {"email": "Ann@Example.com"}, "properties": properties},
        {"id": "p-1", "type": "page_viewed", "user": {"email": "ann@example.com"}},
    ]
    response = app.post(BATCH, {"events": events}, format="json")
    assert response.json()["accepted"] == 2
    assert inbox_apply()["applied"] == 2
    relay.outbox_relay(budget_seconds=10)

    by_secret = verified_by_secret(receiver.requests, plain_secret, allowed_secret)
    plain, rich = by_secret[plain_secret], by_secret[allowed_secret]
    assert plain["type"] == rich["type"] == "assessment.completed"
    assert len(receiver.requests) == 2
    data = plain["data"]
    assert data.keys() == {"id", "contact", "email", "external_id", "occurred_at"}
    assert data["email"] == "ann@example.com"
    assert rich["data"]["assessment"] == {
        "assessmentType": "strategic_readiness",  # which assessment is medical too
        "readinessScore": 75,
        "answers": {"sleep": "poor"},
    }
    assert "persona" not in rich["data"]
    assert WebhookEndpoint.objects.get(pk=allowed.pk).phi_fields == ["assessment"]


def test_a_receiver_echoing_an_assessment_leaves_no_score_in_the_delivery_log(app, make_endpoint, receiver):
    """Receivers quote the body back ("invalid payload: {...}"), and the delivery log keeps the
    first 500 characters: readable by API clients with webhooks:read and staff with the delivery
    log's view permission, neither of whom may see medical fields, and untouched by erasure. Text
    values we sent were redacted, numbers were not: the assessment's scores stayed there, beside
    the contact's id."""
    allowed, _ = make_endpoint(event_types=["assessment.completed"], may_receive_phi=True, phi_fields=["assessment"])
    receiver.default, receiver.echo = 400, True
    properties = {"assessmentType": "phq9", "readinessScore": 87.25, "score": -918273.5, "answers": {"q1": 3}}
    event = {"id": "a-2", "type": "assessment_completed", "user": {"email": "bo@example.com"}, "properties": properties}
    assert app.post(BATCH, {"events": [event]}, format="json").json()["accepted"] == 1
    assert inbox_apply()["applied"] == 1
    relay.outbox_relay(budget_seconds=10)
    [request] = receiver.requests
    assert b"918273.5" in request.body and b"87.25" in request.body  # the endpoint was allowed them
    excerpt = allowed.deliveries.get().response_excerpt
    assert excerpt.startswith("invalid payload: ")
    for value in ("918273.5", "87.25", '"q1":3', "phq9"):
        assert value not in excerpt, (value, excerpt)
