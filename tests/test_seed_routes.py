"""The routes the seed documents name (DESIGN.md, "Routes the seed documents name"), through the
product's own URLconf: each one whose app exists answers as the seed writes it, with the seed's
own example payloads; each one whose app does not exist yet is absent (404), never a stub."""

import pytest

from contacts.models import Activity, Contact
from contacts.services import contact_create
from contacts.tests.factories import ContactFactory
from integrations.tasks import inbox_apply
from leads.services import lead_capture

pytestmark = pytest.mark.django_db
HIGH = {"priority": "high"}

ALL_SCOPES = [
    "contacts:read",
    "contacts:write",
    "events:write",
    "events:read",
    "audit:read",
    "gdpr:write",
    "leads:read",
    "leads:write",
    "deals:read",
    "webhooks:read",
    "webhooks:write",
    "admin",
]


@pytest.fixture
def everything(key_client):
    return key_client(ALL_SCOPES, name="seed caller")


# Seed 002 and 000 routes whose apps (coaching, campaigns, scheduling, the Klaviyo adapter) do
# not exist yet, and seed 003's email and calendar routes (campaigns, scheduling).
ABSENT = [
    ("post", "/api/crm/users"),
    ("get", "/api/crm/users/user_123/goals"),
    ("post", "/api/crm/users/user_123/goals"),
    ("put", "/api/crm/goals/1"),
    ("post", "/api/crm/users/user_123/ask"),
    ("get", "/api/crm/users/user_123/insights"),
    ("post", "/api/crm/users/user_123/insights/1/dismiss"),
    ("get", "/api/crm/users/user_123/coaching-history"),
    ("get", "/api/crm/users/user_123/activities?limit=20"),
    ("get", "/api/crm/users/user_123/nutrition-snapshot"),
    ("get", "/api/crm/users/user_123/metrics"),
    ("get", "/api/crm/churn-risk"),
    ("post", "/api/crm/jobs/daily-insights"),
    ("post", "/api/crm/jobs/assess-churn"),
    ("post", "/api/klaviyo/account-created"),
    ("post", "/api/klaviyo/onboarding-completed"),
    ("post", "/api/klaviyo/user-logged-in"),
    ("post", "/api/klaviyo/prescription-ordered"),
    ("get", "/api/integrations/email/track/open"),
    ("get", "/api/integrations/email/track/click"),
    ("get", "/api/integrations/email/unsubscribe"),
    ("post", "/api/integrations/calendar/consultation-request"),
    ("post", "/api/integrations/calendar/webhooks/calendly"),
    ("get", "/api/integrations/calendar/available-slots"),
]


@pytest.mark.parametrize(("method", "url"), ABSENT)
def test_routes_of_apps_not_built_yet_are_absent_not_stubs(everything, api_client, method, url):
    ContactFactory(external_id="user_123", email="user@example.com")
    for client in (everything, api_client):
        response = getattr(client, method)(url, {"userId": "user_123", "email": "user@example.com"}, format="json")
        assert response.status_code == 404, (method, url, response.status_code, response.content[:200])
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("method", ["get", "put"])
def test_seed_002_user_profile_read_and_update_are_not_served(everything, method):
    """GET|PUT /api/crm/users/:userId wait for the coaching profile; only DELETE is served on
    that path, so the other methods are a 405 naming what is allowed (no stub answers them)."""
    ContactFactory(external_id="user_123")
    body = {"age": 28, "height_cm": 180, "activity_level": "active", "engagement_tier": "gold"}
    response = getattr(everything, method)("/api/crm/users/user_123", body, format="json")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    assert {m.strip() for m in response["Allow"].split(",")} == {"DELETE", "OPTIONS"}


def test_seed_002_app_event_verbatim(everything):
    """Section 1's request, verbatim, and its 202 shape; then the replay of Testing's idempotency."""
    ContactFactory(email=None, external_id="user_123")
    body = {
        "entityType": "food_log",
        "operation": "create",
        "userId": "user_123",
        "externalId": "food_12345",
        "payload": {
            "food_name": "Grilled Chicken",
            "calories": 450,
            "protein": 45,
            "carbs": 50,
            "fat": 12,
            "date": "2025-12-28",
        },
    }
    url = "/api/crm/webhooks/app-event"
    first = everything.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="food_12345_1703808000")
    again = everything.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="food_12345_1703808000")
    assert (first.status_code, again.status_code) == (202, 202), first.content
    data = first.json()
    assert set(data) == {"status", "idempotencyKey", "result"} and set(data["result"]) == {"status", "data"}
    assert (data["status"], data["idempotencyKey"]) == ("accepted", "food_12345_1703808000")
    assert again.json()["idempotencyKey"] == data["idempotencyKey"]
    inbox_apply()
    activity = Activity.objects.get(type="food_logged")
    assert activity.properties["protein"] == 45 and activity.properties["external_id"] == "food_12345"
    # Without the header: a 4xx JSON error, nothing queued.
    missing = everything.post(url, body, format="json")
    assert missing.status_code == 400 and "error" in missing.json()


def test_seed_002_integration_flow_with_the_user_created_by_event(everything):
    """Testing's integration flow: the user (POST /api/crm/users being absent, by the app-event
    user/create), then step 2's food log exactly as written (no externalId)."""
    url = "/api/crm/webhooks/app-event"
    user = {"entityType": "user", "operation": "create", "userId": "u_test", "payload": {"email": "u@example.com"}}
    assert everything.post(url, user, format="json", HTTP_IDEMPOTENCY_KEY="u_test_1").status_code == 202
    food = {
        "entityType": "food_log",
        "operation": "create",
        "userId": "u_test",
        "payload": {"food_name": "Chicken", "calories": 400},
    }
    response = everything.post(url, food, format="json", HTTP_IDEMPOTENCY_KEY="food_test_1")
    assert response.status_code == 202, response.content
    inbox_apply()
    assert Contact.objects.get(external_id="u_test").email == "u@example.com"
    assert Activity.objects.filter(type="food_logged", contact__external_id="u_test").count() == 1


@pytest.mark.parametrize(
    ("entity", "payload"),
    [
        ("goal", {"goal_type": "weight", "goal_value": 75, "goal_unit": "kg", "target_date": "2026-03-28"} | HIGH),
        ("goal", {"progress_pct": 45, "status": "active"}),
        ("profile", {"age": 28, "height_cm": 180, "activity_level": "active", "engagement_tier": "gold"}),
    ],
)
def test_seed_002_payloads_through_app_event(everything, entity, payload):
    ContactFactory(email=None, external_id="user_123")
    operation = "update" if "progress_pct" in payload or entity == "profile" else "create"
    body = {"entityType": entity, "operation": operation, "userId": "user_123", "payload": payload}
    response = everything.post("/api/crm/webhooks/app-event", body, format="json", HTTP_IDEMPOTENCY_KEY=f"k-{entity}")
    assert response.status_code == 202, response.content


@pytest.mark.parametrize("entity", ["food_log", "goal", "profile"])
def test_seed_002_a_delete_with_no_event_type_is_a_400_naming_the_pair(everything, entity):
    """Issue 5: one declared table maps entityType + operation onto our event types, and an
    unmapped pair is a 400 naming it (README lists the pairs). No event type deletes a food log,
    a goal or a profile yet (the coaching models that would hold them do not exist); nothing is
    queued."""
    from integrations.models import InboundEvent

    ContactFactory(email=None, external_id="user_123")
    body = {"entityType": entity, "operation": "delete", "userId": "user_123", "externalId": "x_1", "payload": {}}
    response = everything.post("/api/crm/webhooks/app-event", body, format="json", HTTP_IDEMPOTENCY_KEY=f"d-{entity}")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["entityType"] == [f"No event for {entity}/delete."]
    assert not InboundEvent.objects.exists()


def test_seed_002_audit_log_and_erasure(everything, system_actor):
    contact_create(actor=system_actor, external_id="user_123", email="user@example.com")
    trail = everything.get("/api/crm/audit-log/user_123")
    assert trail.status_code == 200 and set(trail.json()) == {"status", "userId", "data"}
    assert trail.json()["data"], "the contact's creation is audited"
    assert set(trail.json()["data"][0]) >= {"id", "user_id", "actor_type", "action", "entity_type", "created_at"}
    erased = everything.delete("/api/crm/users/user_123")
    assert erased.status_code == 200 and erased.json()["status"] == "success"
    assert not Contact.objects.filter(external_id="user_123").exists()


# ----------------------------------------------------------------------------- seed 003

CRM = "/api/integrations/crm"
HOOKS = "/api/integrations/webhooks"


def test_seed_003_lead_routes(everything, system_actor):
    lead_capture(actor=system_actor, source="assessment", email="user@example.com", first_name="John")
    assert everything.get(f"{CRM}/leads/user@example.com").status_code == 200
    assert everything.get(f"{CRM}/leads/user%40example.com").status_code == 200  # encodeURIComponent
    assert everything.get(f"{CRM}/leads/user@example.com/activities").status_code == 200
    status = everything.put(f"{CRM}/leads/user@example.com/status", {"status": "contacted"}, format="json")
    assert status.status_code == 200 and status.json()["status"] == "contacted"
    assert everything.get(f"{CRM}/leads", {"q": "user@example.com"}).json()["results"]
    stats = everything.get(f"{CRM}/pipeline/stats")
    assert stats.status_code == 200 and set(stats.json()) >= {"leads", "deals"}


def test_seed_003_webhook_stats_with_the_optional_id_left_out(everything):
    """`GET /api/integrations/webhooks/stats/:endpointId?`: the id is optional, so /stats is served."""
    for url in (f"{HOOKS}/stats", f"{HOOKS}/stats/"):
        response = everything.get(url)
        assert response.status_code == 200, (url, response.status_code)
        assert response.json()["endpointId"] is None
