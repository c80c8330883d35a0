"""Seed 003's lead routes, keyed by email, served exactly as the seed writes them."""

import datetime as dt

import pytest
import yaml
from django.utils import timezone
from drf_spectacular.validation import validate_schema

from contacts.models import Activity
from contacts.services import activity_record
from leads.models import Lead, LeadStatusChange
from leads.services import deal_create, lead_capture, lead_set_status

pytestmark = pytest.mark.django_db

BASE = "/api/integrations/crm"


@pytest.fixture
def lead(system_actor):
    return lead_capture(
        actor=system_actor, source="assessment", email="Seed@Example.com", first_name="Sam", persona="Explorer"
    )


def test_get_lead_by_email_any_case(key_client, lead):
    response = key_client(["leads:read"]).get(f"{BASE}/leads/SEED@example.com")
    assert response.status_code == 200
    assert response.json()["id"] == lead.pk and response.json()["contact"]["email"] == "seed@example.com"


def test_get_lead_by_email_prefers_the_open_lead(key_client, lead, system_actor):
    lead_set_status(lead=lead, status="unqualified", actor=system_actor)
    newer = lead_capture(actor=system_actor, source="api", email="seed@example.com")
    lead_set_status(lead=newer, status="contacted", actor=system_actor)
    assert key_client(["leads:read"]).get(f"{BASE}/leads/seed@example.com").json()["id"] == newer.pk


def test_unknown_email_is_404_json(key_client):
    response = key_client(["leads:read"]).get(f"{BASE}/leads/nobody@example.com")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_get_lead_activities(key_client, lead, system_actor):
    activity_record(contact=lead.contact, type="page_viewed", actor=system_actor, properties={"path": "/plans"})
    response = key_client(["leads:read"]).get(f"{BASE}/leads/seed@example.com/activities")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [row["type"] for row in rows] == ["page_viewed", "lead_captured"]
    assert "properties" not in rows[0]  # PHI-classified: only with phi:read
    full = key_client(["leads:read", "phi:read"]).get(f"{BASE}/leads/seed@example.com/activities").json()
    assert full["results"][0]["properties"] == {"path": "/plans"}


def test_lead_activities_pages_do_not_repeat_a_row_when_an_event_arrives(key_client, lead):
    at = timezone.now() - dt.timedelta(hours=1)
    captured = Activity.objects.get(contact=lead.contact, type="lead_captured")
    Activity.objects.filter(pk=captured.pk).update(occurred_at=at - dt.timedelta(days=1))
    batch = [Activity.objects.create(contact=lead.contact, type="food_log", occurred_at=at).pk for _ in range(3)]
    client = key_client(["leads:read"])
    first = client.get(f"{BASE}/leads/seed@example.com/activities", {"limit": 2}).json()
    Activity.objects.create(contact=lead.contact, type="page_viewed", occurred_at=timezone.now())
    second = client.get(first["next"]).json()
    seen = [row["id"] for row in first["results"] + second["results"]]
    assert seen == [*sorted(batch, reverse=True), captured.pk]


def test_put_lead_status(key_client, lead):
    client = key_client(["leads:write"])
    response = client.put(
        f"{BASE}/leads/seed@example.com/status", {"status": "qualified", "reason": "fit"}, format="json"
    )
    assert response.status_code == 200 and response.json()["status"] == "qualified"
    assert LeadStatusChange.objects.get(lead=lead).reason == "fit"
    bad = client.put(f"{BASE}/leads/seed@example.com/status", {"status": "hot"}, format="json")
    assert bad.status_code == 400 and "status" in bad.json()["error"]["fields"]
    assert (
        key_client(["leads:read"])
        .put(f"{BASE}/leads/seed@example.com/status", {"status": "new"}, format="json")
        .status_code
        == 403
    )
    assert Lead.objects.get(pk=lead.pk).status == "qualified"


def test_search_leads(key_client, lead, system_actor):
    other = lead_capture(actor=system_actor, source="referral", email="zoe@example.com", first_name="Zoe")
    client = key_client(["leads:read"])

    def ids(query):
        response = client.get(f"{BASE}/leads", query)
        assert response.status_code == 200
        return [row["id"] for row in response.json()["results"]]

    assert ids({"q": "zoe"}) == [other.pk]
    assert ids({"q": "seed@example.com"}) == [lead.pk]
    assert ids({"source": "assessment"}) == [lead.pk]
    assert ids({"status": "new"}) == [other.pk, lead.pk]
    writer = key_client(["leads:read", "leads:write"], name="writer")
    count = Lead.objects.count()
    refused = writer.post(f"{BASE}/leads", {"email": "x@example.com", "source": "api"}, format="json")
    assert refused.status_code == 405  # seed 003's search route is read-only
    assert Lead.objects.count() == count


def test_pipeline_stats(key_client, lead, system_actor, stages):
    deal_create(actor=system_actor, name="won", amount=200, stage=stages["closedwon"])
    response = key_client(["deals:read"]).get(f"{BASE}/pipeline/stats")
    assert response.status_code == 200
    data = response.json()
    assert data["leads"]["new"] == 1
    assert data["deals"]["pipeline"]["name"] == "Sales"
    assert data["deals"]["won"] == 1 and data["deals"]["totals"]["amount"] == "200.00"
    assert key_client(["leads:read"]).get(f"{BASE}/pipeline/stats").status_code == 403


def test_pipeline_stats_report_each_currency_apart(key_client, lead, system_actor, stages):
    """Seed 003's stats summed 200 USD and 70 EUR into `"amount": "270.00"`."""
    deal_create(actor=system_actor, name="won", amount=200, stage=stages["closedwon"])
    deal_create(actor=system_actor, name="won in euros", amount=70, currency="EUR", stage=stages["closedwon"])
    deals = key_client(["deals:read"]).get(f"{BASE}/pipeline/stats").json()["deals"]
    assert deals["currency"] == "USD" and deals["won"] == 2
    assert (deals["totals"]["count"], deals["totals"]["amount"]) == (2, "200.00")
    assert [(part["currency"], part["count"], part["amount"]) for part in deals["totals"]["by_currency"]] == [
        ("EUR", 1, "70.00"),
        ("USD", 1, "200.00"),
    ]


def test_no_key_is_401(api_client):
    assert api_client.get(f"{BASE}/leads/seed@example.com").status_code == 401


def test_schema_with_the_leads_routes_is_valid(client):
    schema = yaml.safe_load(client.get("/api/schema/").content)
    validate_schema(schema)
    paths = schema["paths"]
    for route in (
        "/api/v1/leads",
        "/api/v1/leads/{id}",
        "/api/v1/deals/{id}/move",
        "/api/v1/pipelines/{id}/stats",
        "/api/v1/funnels/{name}",
        "/api/integrations/crm/leads/{email}",
        "/api/integrations/crm/leads/{email}/activities",
        "/api/integrations/crm/leads/{email}/status",
        "/api/integrations/crm/pipeline/stats",
    ):
        assert route in paths, route
    assert "put" in paths["/api/integrations/crm/leads/{email}/status"]
    assert "post" not in paths["/api/integrations/crm/leads"]


def test_lead_by_email_follows_a_merge(key_client, lead, system_actor):
    from contacts.services import contact_merge

    survivor = lead_capture(actor=system_actor, source="api", email="survivor@example.com")
    lead_set_status(lead=survivor, status="converted", actor=system_actor)
    contact_merge(survivor=survivor.contact, loser=lead.contact, actor=system_actor)
    response = key_client(["leads:read"]).get(f"{BASE}/leads/seed@example.com")
    assert response.status_code == 200
    assert response.json()["id"] == lead.pk  # moved to the survivor, still open
    assert response.json()["contact"]["email"] == "survivor@example.com"


def test_malformed_email_is_400(key_client):
    response = key_client(["leads:read"]).get(f"{BASE}/leads/not-an-email")
    assert response.status_code == 400
    assert "email" in response.json()["error"]["fields"]


def test_search_leads_created_since_with_an_offset_postgresql_refuses_is_read_in_utc(key_client, lead):
    client = key_client(["leads:read"])
    client.raise_request_exception = False
    response = client.get(f"{BASE}/leads", {"created_since": "2000-01-24T13:40:34+23:28"})
    assert response.status_code == 200, response.content
    assert [row["id"] for row in response.json()["results"]] == [lead.pk]
