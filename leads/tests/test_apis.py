"""The leads API through HTTP: capture, status, deals, moves, pipelines, stats, funnels, and
the refusals (no key, wrong scope, wrong group, bad input)."""

import datetime as dt

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from contacts.models import Contact, Subscription
from crm_platform.models import OutboxMessage
from leads.models import Deal, Lead, LeadStatusChange, Pipeline, Stage
from leads.services import deal_create, lead_capture

pytestmark = pytest.mark.django_db

LEADS = "/api/v1/leads"
DEALS = "/api/v1/deals"


def error(response):
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", LEADS),
        ("post", LEADS),
        ("get", DEALS),
        ("get", "/api/v1/pipelines"),
        ("get", "/api/v1/funnels/purchase"),
    ],
)
def test_no_key_is_401_json(api_client, method, url):
    response = getattr(api_client, method)(url)
    assert response.status_code == 401
    assert error(response)["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("scopes", "method", "url", "needed"),
    [
        (["deals:read"], "get", LEADS, "leads:read"),
        (["leads:read"], "post", LEADS, "leads:write"),
        (["leads:read"], "get", DEALS, "deals:read"),
        (["deals:read"], "post", DEALS, "deals:write"),
        (["leads:write"], "get", "/api/v1/pipelines", "deals:read"),
        (["deals:read"], "get", "/api/v1/funnels/purchase", "leads:read"),
    ],
)
def test_wrong_scope_is_403_naming_the_scope(key_client, scopes, method, url, needed):
    response = getattr(key_client(scopes), method)(url, {}, format="json")
    assert response.status_code == 403
    assert error(response)["message"] == f"The caller lacks the scope '{needed}'."


def test_staff_sessions_follow_their_group(client, django_user_model, system_actor):
    deal_create(actor=system_actor, name="Visible to sales", amount=1)
    sales = django_user_model.objects.create_user(username="s", password="a-long-test-password", is_staff=True)
    sales.groups.add(Group.objects.get(name="Sales"))
    coach = django_user_model.objects.create_user(username="c", password="a-long-test-password", is_staff=True)
    coach.groups.add(Group.objects.get(name="Coach"))
    client.force_login(sales)
    assert client.get(LEADS).status_code == 200
    assert client.get(DEALS).json()["results"][0]["name"] == "Visible to sales"
    client.force_login(coach)
    assert client.get(LEADS).status_code == 200
    assert client.get(DEALS).status_code == 403  # coaches do not see (or edit) deals


# ----------------------------------------------------------------------------- leads


def test_capture_is_201_and_dedupes_onto_the_contact(key_client):
    client = key_client(["leads:write", "leads:read"])
    body = {"email": "New@Example.com", "source": "website_form", "first_name": "Nia", "utm_source": "google"}
    first = client.post(LEADS, body, format="json")
    assert first.status_code == 201
    data = first.json()
    assert (data["status"], data["source"], data["utm_source"]) == ("new", "website_form", "google")
    assert (data["contact"]["email"], data["contact"]["lifecycle_stage"]) == ("new@example.com", "lead")
    again = client.post(LEADS, {**body, "source": "assessment"}, format="json")
    assert again.status_code == 201 and again.json()["id"] == data["id"]
    assert Contact.objects.count() == 1 and Lead.objects.count() == 1


def test_assessment_and_persona_are_shown_only_with_phi_read(key_client, system_actor):
    lead = lead_capture(
        actor=system_actor, source="assessment", email="phi@example.com", assessment={"bmi": 31}, persona="P"
    )
    plain = key_client(["leads:read"]).get(f"{LEADS}/{lead.pk}").json()
    assert "assessment" not in plain and "persona" not in plain
    medical = key_client(["leads:read", "phi:read"]).get(f"{LEADS}/{lead.pk}").json()
    assert (medical["assessment"], medical["persona"]) == ({"bmi": 31}, "P")
    listed = key_client(["leads:read"]).get(LEADS).json()["results"][0]
    assert "assessment" not in listed


def test_capture_bad_input_is_400_with_fields(key_client):
    response = key_client(["leads:write"]).post(LEADS, {"email": "nope", "source": "pigeon"}, format="json")
    assert response.status_code == 400
    body = error(response)
    assert body["code"] == "validation_error"
    assert set(body["fields"]) == {"email", "source"}
    assert not Contact.objects.exists()


def test_capture_with_a_bad_phone_is_400_from_the_service(key_client):
    response = key_client(["leads:write"]).post(
        LEADS, {"email": "p@example.com", "source": "api", "phone": "12"}, format="json"
    )
    assert response.status_code == 400
    assert "phone" in error(response)["fields"]


def test_capture_identity_conflict_is_409(key_client, system_actor):
    lead_capture(actor=system_actor, source="api", email="a@example.com")
    lead_capture(actor=system_actor, source="api", external_id="u-1")
    response = key_client(["leads:write"]).post(
        LEADS, {"email": "a@example.com", "external_id": "u-1", "source": "api"}, format="json"
    )
    assert response.status_code == 409
    assert error(response)["code"] == "identity_conflict"


def test_lead_list_filters(key_client, system_actor, make_staff, no_assignment_rules):
    rep = make_staff("rep")
    web = lead_capture(actor=system_actor, source="website_form", email="web@example.com", owner=rep)
    ref = lead_capture(actor=system_actor, source="referral", email="ref@example.com", last_name="Zed")
    Lead.objects.filter(pk=ref.pk).update(status="qualified", created_at=timezone.now() - dt.timedelta(days=9))
    client = key_client(["leads:read"])

    def ids(query):
        response = client.get(LEADS, query)
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["results"]]

    assert ids({}) == [ref.pk, web.pk]
    assert ids({"status": "qualified"}) == [ref.pk]
    assert ids({"source": "website_form"}) == [web.pk]
    assert ids({"owner": rep.pk}) == [web.pk]
    assert ids({"email": "WEB@example.com"}) == [web.pk]
    assert ids({"created_since": (timezone.now() - dt.timedelta(days=1)).isoformat()}) == [web.pk]
    assert ids({"q": "zed"}) == [ref.pk]
    assert client.get(LEADS, {"status": "won"}).status_code == 400


def test_lead_list_is_cursor_paginated(key_client, system_actor):
    for i in range(3):
        lead_capture(actor=system_actor, source="api", email=f"page{i}@example.com")
    client = key_client(["leads:read"])
    first = client.get(LEADS, {"limit": 2}).json()
    assert len(first["results"]) == 2 and first["next"]
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None


def test_patch_status_with_reason_and_owner(key_client, system_actor, make_staff):
    lead = lead_capture(actor=system_actor, source="api", email="pa@example.com")
    rep = make_staff("rep")
    client = key_client(["leads:write"])
    response = client.patch(
        f"{LEADS}/{lead.pk}", {"status": "contacted", "reason": "called", "owner": rep.pk}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["owner"]) == ("contacted", rep.pk)
    change = LeadStatusChange.objects.get(lead=lead)
    assert (change.to_status, change.reason, change.actor_kind) == ("contacted", "called", "api_key")
    assert client.patch(f"{LEADS}/{lead.pk}", {"status": "won"}, format="json").status_code == 400
    assert client.patch(f"{LEADS}/{lead.pk}", {"owner": 999999}, format="json").status_code == 400
    assert client.patch(f"{LEADS}/999999", {"status": "new"}, format="json").status_code == 404


def test_patch_out_of_converted_is_400(key_client, system_actor):
    lead = lead_capture(actor=system_actor, source="api", email="cv@example.com")
    client = key_client(["leads:write"])
    assert client.patch(f"{LEADS}/{lead.pk}", {"status": "converted"}, format="json").status_code == 200
    response = client.patch(f"{LEADS}/{lead.pk}", {"status": "new"}, format="json")
    assert response.status_code == 400
    assert "status" in error(response)["fields"]


# ----------------------------------------------------------------------------- deals


def test_create_deal_in_a_stage_by_key_and_read_it(key_client, make_contact, stages):
    contact = make_contact("buyer@example.com")
    client = key_client(["deals:write", "deals:read"])
    response = client.post(
        DEALS,
        {"name": "Buyer - Premium", "amount": "149.00", "stage": "proposal", "contact": contact.pk, "plan": "Premium"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    data = response.json()
    assert (data["stage"]["key"], data["amount"], data["contact"]) == ("proposal", "149.00", contact.pk)
    assert "plan" not in data  # PHI: only with phi:read
    assert Deal.objects.get(pk=data["id"]).plan == "Premium"
    detail = key_client(["deals:read", "phi:read"]).get(f"{DEALS}/{data['id']}").json()
    assert detail["plan"] == "Premium"


def test_create_deal_bad_input(key_client):
    client = key_client(["deals:write"])
    response = client.post(DEALS, {"name": "", "amount": "-1", "stage": "nowhere"}, format="json")
    assert response.status_code == 400
    assert {"name", "amount"} <= set(error(response)["fields"])
    response = client.post(DEALS, {"name": "x", "stage": "nowhere"}, format="json")
    assert response.status_code == 400
    assert error(response)["fields"] == {"stage": ["No such stage: 'nowhere'."]}
    response = client.post(DEALS, {"name": "x", "contact": 424242}, format="json")
    assert response.status_code == 400 and "contact" in error(response)["fields"]


def test_create_deal_with_a_currency_of_non_ascii_letters_is_400(key_client):
    client = key_client(["deals:write"])
    response = client.post(DEALS, {"name": "x", "currency": "ÄÖÜ"}, format="json")
    assert response.status_code == 400
    assert error(response)["fields"] == {"currency": ["A three-letter ISO 4217 code."]}
    ok = client.post(DEALS, {"name": "x", "currency": "eur"}, format="json")
    assert ok.status_code == 201 and ok.json()["currency"] == "EUR"


def test_deal_list_filters(key_client, system_actor, stages, make_contact, make_staff):
    rep = make_staff("rep")
    contact = make_contact("f@example.com")
    a = deal_create(actor=system_actor, name="A", amount=1, owner=rep)
    b = deal_create(actor=system_actor, name="B", amount=1, stage=stages["proposal"], contact=contact)
    client = key_client(["deals:read"])

    def ids(query):
        response = client.get(DEALS, query)
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["results"]]

    assert ids({"stage": "proposal"}) == [b.pk]
    assert ids({"stage": stages["appointment"].pk}) == [a.pk]
    assert ids({"owner": rep.pk}) == [a.pk]
    assert ids({"contact": contact.pk}) == [b.pk]
    assert ids({"pipeline": a.pipeline_id}) == [b.pk, a.pk]


def test_patch_deal_fields_but_not_its_stage(key_client, system_actor):
    deal = deal_create(actor=system_actor, name="Old", amount=1)
    client = key_client(["deals:write"])
    response = client.patch(f"{DEALS}/{deal.pk}", {"name": "New", "close_date": "2030-01-31"}, format="json")
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["close_date"]) == ("New", "2030-01-31")
    response = client.patch(f"{DEALS}/{deal.pk}", {"stage": "closedwon"}, format="json")
    assert response.status_code == 400 and "stage" in error(response)["fields"]
    assert Deal.objects.get(pk=deal.pk).stage.key == "appointment"


def test_move_by_key_fires_automations(key_client, system_actor, make_contact):
    contact = make_contact("mover@example.com")
    deal = deal_create(actor=system_actor, name="Mover", amount=10, contact=contact, plan="Premium")
    response = key_client(["deals:write"]).post(f"{DEALS}/{deal.pk}/move", {"stage": "closedwon"}, format="json")
    assert response.status_code == 200
    assert response.json()["stage"]["key"] == "closedwon"
    contact.refresh_from_db()
    assert contact.lifecycle_stage == "subscriber"
    assert [s.plan for s in Subscription.objects.filter(contact=contact)] == ["Premium"]  # plan: encrypted
    assert OutboxMessage.objects.filter(topic="onboarding.requested").exists()


def test_winning_again_after_the_amount_changed_keeps_the_first_subscription(key_client, system_actor, make_contact):
    """The subscription a win starts is keyed by the deal; reopened, repriced and won again, the
    deal still moves (the service's "another amount" conflict is not the move's business) and
    the subscription stays the first one."""
    contact = make_contact("repriced@example.com")
    deal = deal_create(actor=system_actor, name="Repriced", amount=10, contact=contact, plan="Premium")
    client = key_client(["deals:write"])
    for stage in ("closedwon", "negotiation"):
        assert client.post(f"{DEALS}/{deal.pk}/move", {"stage": stage}, format="json").status_code == 200
    assert client.patch(f"{DEALS}/{deal.pk}", {"amount": "25.00"}, format="json").status_code == 200
    response = client.post(f"{DEALS}/{deal.pk}/move", {"stage": "closedwon"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["stage"]["key"] == "closedwon"
    [subscription] = Subscription.objects.filter(contact=contact)
    assert subscription.amount == 10


def test_move_by_id_and_the_refusals(key_client, system_actor, stages):
    deal = deal_create(actor=system_actor, name="M", amount=1)
    client = key_client(["deals:write"])
    url = f"{DEALS}/{deal.pk}/move"
    assert client.post(url, {"stage": stages["proposal"].pk}, format="json").json()["stage"]["key"] == "proposal"
    response = client.post(url, {"stage": "nowhere"}, format="json")
    assert response.status_code == 400
    assert error(response)["fields"] == {"stage": ["No such stage: 'nowhere'."]}
    foreign = Stage.objects.create(pipeline=Pipeline.objects.create(name="Other"), key="x", name="X")
    response = client.post(url, {"stage": foreign.pk}, format="json")
    assert response.status_code == 400 and "stage" in error(response)["fields"]
    assert client.post(url, {}, format="json").status_code == 400
    assert client.post(f"{DEALS}/999999/move", {"stage": "proposal"}, format="json").status_code == 404
    assert Deal.objects.get(pk=deal.pk).stage.key == "proposal"


# ----------------------------------------------------------------------------- pipelines, stats, funnels


def test_pipelines_list_their_stages(key_client):
    results = key_client(["deals:read"]).get("/api/v1/pipelines").json()["results"]
    default = next(p for p in results if p["is_default"])
    assert [s["key"] for s in default["stages"]][:2] == ["appointment", "qualification"]
    assert default["stages"][0]["probability"] == "0.20"


def test_pipeline_stats_api(key_client, system_actor, stages, make_staff, pipeline):
    rep = make_staff("rep")
    deal_create(actor=system_actor, name="a", amount=100, owner=rep)
    deal_create(actor=system_actor, name="b", amount=300, stage=stages["closedwon"])
    deal_create(actor=system_actor, name="c", amount=50, stage=stages["closedlost"])
    client = key_client(["deals:read"])
    url = f"/api/v1/pipelines/{pipeline.pk}/stats"
    data = client.get(url).json()
    rows = {row["key"]: row for row in data["stages"]}
    assert (rows["appointment"]["count"], rows["appointment"]["amount"], rows["appointment"]["weighted_amount"]) == (
        1,
        "100.00",
        "20.00",
    )
    assert data["win_rate"] == 0.5 and data["totals"]["count"] == 3
    mine = client.get(url, {"owner": rep.pk}).json()
    assert mine["totals"]["count"] == 1 and mine["win_rate"] is None
    future = client.get(url, {"since": (timezone.now() + dt.timedelta(days=1)).isoformat()}).json()
    assert future["totals"]["count"] == 0
    bad = client.get(url, {"since": "yesterday"})
    assert bad.status_code == 400 and "since" in error(bad)["fields"]
    backwards = client.get(url, {"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"})
    assert backwards.status_code == 400
    assert client.get("/api/v1/pipelines/999999/stats").status_code == 404


def test_funnel_api(key_client, make_contact, system_actor):
    from contacts.services import lifecycle_transition

    contact = make_contact("fun@example.com", source="referral")
    lifecycle_transition(contact=contact, to_stage="patient", reason="t", actor=system_actor)
    lifecycle_transition(contact=contact, to_stage="active_customer", reason="t", actor=system_actor)
    make_contact("other@example.com")
    lifecycle_transition(
        contact=Contact.objects.get(email="other@example.com"), to_stage="patient", reason="t", actor=system_actor
    )
    client = key_client(["leads:read"])
    data = client.get("/api/v1/funnels/purchase").json()
    assert (data["funnel"], data["entered"], data["converted"], data["rate"]) == ("purchase", 2, 1, 0.5)
    assert client.get("/api/v1/funnels/purchase", {"source": "referral"}).json()["rate"] == 1.0
    long_ago = client.get("/api/v1/funnels/purchase", {"until": "2001-01-01T00:00:00Z"}).json()
    assert long_ago["entered"] == 0


def test_unknown_funnel_is_404_json(key_client):
    response = key_client(["leads:read"]).get("/api/v1/funnels/happiness")
    assert response.status_code == 404
    body = error(response)
    assert body["code"] == "not_found" and "consultation" in body["message"]


def test_funnel_bad_range_is_400(key_client):
    response = key_client(["leads:read"]).get(
        "/api/v1/funnels/purchase", {"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}
    )
    assert response.status_code == 400 and "until" in error(response)["fields"]


def test_funnel_until_too_early_for_the_default_since_is_400(key_client):
    client = key_client(["leads:read"])
    response = client.get("/api/v1/funnels/purchase", {"until": "0001-01-02T00:00:00Z"})
    assert response.status_code == 400 and set(error(response)["fields"]) == {"until"}
    given = client.get("/api/v1/funnels/purchase", {"since": "0001-01-01T00:00:00Z", "until": "0001-01-02T00:00:00Z"})
    assert given.status_code == 200 and given.json()["entered"] == 0


@pytest.mark.parametrize(
    ("created_since", "found"),
    [("2000-01-24T13:40:34+23:28", True), ("2000-01-24T13:40:34-23:28", True), ("0001-01-01T00:00:00+05:00", None)],
)
def test_lead_list_created_since_with_an_offset_postgresql_refuses_is_read_in_utc(
    key_client, system_actor, created_since, found
):
    # Python reads offsets up to 23:59, PostgreSQL none beyond 15:59: passed on as given, a 500.
    lead = lead_capture(actor=system_actor, source="website_form", email="tz@example.com")
    client = key_client(["leads:read"])
    client.raise_request_exception = False
    response = client.get(LEADS, {"created_since": created_since})
    if found is None:  # before year 1 in UTC
        assert response.status_code == 400, response.content
        assert "created_since" in error(response)["fields"]
    else:
        assert response.status_code == 200, response.content
        assert [row["id"] for row in response.json()["results"]] == [lead.pk]


def test_pipeline_stats_never_add_amounts_in_two_currencies(key_client, system_actor, stages, make_staff, pipeline):
    """A stage holding 100 USD and 250 EUR answered `"amount": "350.00"`, on the rollup and on
    the scan alike. The headline amounts count the pipeline's currency only; every currency
    has its own figures beside them."""
    rep = make_staff("rep")
    deal_create(actor=system_actor, name="usd", amount=100, owner=rep)
    deal_create(actor=system_actor, name="eur", amount=250, currency="EUR", owner=rep)
    deal_create(actor=system_actor, name="won", amount=40, currency="eur", stage=stages["closedwon"], owner=rep)
    client = key_client(["deals:read"])
    url = f"/api/v1/pipelines/{pipeline.pk}/stats"
    for params in ({}, {"owner": rep.pk}):  # the rollup; a scan
        data = client.get(url, params).json()
        assert data["currency"] == "USD", params
        rows = {row["key"]: row for row in data["stages"]}
        first, won = rows["appointment"], rows["closedwon"]
        assert (first["count"], first["amount"], first["weighted_amount"]) == (2, "100.00", "20.00"), params
        assert first["by_currency"] == [
            {"currency": "EUR", "count": 1, "amount": "250.00", "weighted_amount": "50.00"},
            {"currency": "USD", "count": 1, "amount": "100.00", "weighted_amount": "20.00"},
        ]
        assert (won["count"], won["amount"], won["weighted_amount"]) == (1, "0.00", "0.00")
        assert won["by_currency"] == [{"currency": "EUR", "count": 1, "amount": "40.00", "weighted_amount": "40.00"}]
        assert rows["proposal"]["by_currency"] == []
        totals = data["totals"]
        assert (totals["count"], totals["amount"], totals["weighted_amount"]) == (3, "100.00", "20.00")
        assert totals["by_currency"] == [
            {"currency": "EUR", "count": 2, "amount": "290.00", "weighted_amount": "90.00"},
            {"currency": "USD", "count": 1, "amount": "100.00", "weighted_amount": "20.00"},
        ]
        assert data["win_rate"] == 1.0
    Pipeline.objects.filter(pk=pipeline.pk).update(currency="EUR")
    data = client.get(url).json()
    assert (data["currency"], data["totals"]["amount"], data["totals"]["weighted_amount"]) == ("EUR", "290.00", "90.00")
    assert client.get("/api/v1/pipelines").json()["results"][0]["currency"] == "EUR"


def test_pipeline_stats_of_an_owner_read_amounts_and_currencies_from_the_index_alone(
    key_client, system_actor, stages, make_staff, pipeline
):
    """Stats by owner group the owner's deals by stage and currency: deal_owner_idx held the
    amount but not the currency, so each deal was read from the table too (an Index Scan, no
    longer index-only, since amounts are per currency). Its successor holds both."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.support import index_plans

    rep, other = make_staff("rep"), make_staff("other")
    deal_create(actor=system_actor, name="usd", amount=100, owner=rep)
    deal_create(actor=system_actor, name="eur", amount=250, currency="EUR", owner=rep)
    Deal.objects.bulk_create(  # many pages of other owners' deals, so an index is worth reading
        Deal(name=f"fill {n}", pipeline=pipeline, stage=stages["appointment"], amount=n % 13, owner=other)
        for n in range(2000)
    )
    with connection.cursor() as cursor:  # statistics of these rows, not an earlier test's empty table
        cursor.execute("ANALYZE leads_deal")
    client = key_client(["deals:read"])
    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"/api/v1/pipelines/{pipeline.pk}/stats", {"owner": rep.pk})
    assert response.status_code == 200, response.content
    assert [(p["currency"], p["amount"]) for p in response.json()["totals"]["by_currency"]] == [
        ("EUR", "250.00"),
        ("USD", "100.00"),
    ]
    queries = [q["sql"] for q in captured.captured_queries]
    [grouping] = [sql for sql in queries if 'FROM "leads_deal"' in sql and "GROUP BY" in sql]
    [plan] = index_plans([grouping])
    scans = [node for node in _nodes(plan) if node["Node Type"].endswith("Scan")]
    assert [(node["Node Type"], node["Index Name"]) for node in scans] == [
        ("Index Only Scan", "deal_owner_stage_cur_idx")
    ], plan


def _nodes(plan):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def test_a_deal_opened_without_a_currency_takes_its_pipelines(key_client, euro_pipeline, pipeline):
    """A deal opened in a euro pipeline without a currency was a USD deal, left out of that
    pipeline's headline amounts. A currency given still wins."""
    client = key_client(["deals:write", "deals:read"])

    def opened(**body):
        response = client.post(DEALS, {"name": "deal", "amount": "10", **body}, format="json")
        assert response.status_code == 201, response.content
        assert Deal.objects.get(pk=response.json()["id"]).currency == response.json()["currency"]
        return response.json()

    assert opened(pipeline=euro_pipeline.pk)["currency"] == "EUR"
    assert opened(pipeline=euro_pipeline.pk, stage="first")["currency"] == "EUR"
    assert opened(pipeline=euro_pipeline.pk, currency="gbp")["currency"] == "GBP"
    assert opened()["currency"] == "USD"  # the default pipeline's
    Pipeline.objects.filter(pk=pipeline.pk).update(currency="CHF")
    assert opened()["currency"] == "CHF"
    assert opened(stage="appointment", currency="USD")["currency"] == "USD"
    stats = client.get(f"/api/v1/pipelines/{euro_pipeline.pk}/stats").json()
    assert (stats["currency"], stats["totals"]["count"], stats["totals"]["amount"]) == ("EUR", 3, "20.00")
    refused = client.post(DEALS, {"name": "deal", "currency": None}, format="json")
    assert refused.status_code == 400 and "currency" in error(refused)["fields"]


def test_clv_counts_only_the_orders_in_the_reporting_currency(key_client, make_contact, client, settings):
    """CLV averaged a contact's 100 USD and 900 EUR orders into one figure (36,000 "dollars").
    It counts the paid orders in CRM_REPORTING_CURRENCY only; a contact who paid in other
    currencies alone holds none, and one who held a CLV drops to 0 when the currency changes."""
    from leads.tasks import clv_recompute_all

    both, euros_only = make_contact("both@example.com"), make_contact("euros@example.com")
    writer = key_client(["contacts:write"])
    day_ago = (timezone.now() - dt.timedelta(days=1)).isoformat()
    for contact, amount, currency in ((both, "100", "usd"), (both, "900", "EUR"), (euros_only, "900", "EUR")):
        body = {"contact": contact.pk, "amount": amount, "currency": currency, "paid_at": day_ago}
        assert writer.post("/api/v1/orders", body, format="json").status_code == 201

    reader = key_client(["contacts:read"])

    def clv(contact):
        response = reader.get(f"/api/v1/contacts/{contact.pk}")
        assert response.status_code == 200, response.content
        return response.json()["clv"]

    settings.CRM_REPORTING_CURRENCY = "EUR"
    clv_recompute_all.apply().get()
    assert (clv(both), clv(euros_only)) == ("32400.00", "32400.00")  # 900 * 12 a year * 3 years
    settings.CRM_REPORTING_CURRENCY = "USD"
    assert clv_recompute_all.apply().get() == 2
    assert (clv(both), clv(euros_only)) == ("3600.00", "0.00")  # 100 * 12 * 3; no USD order
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    described = schema["components"]["schemas"]["ContactOutput"]["properties"]["clv"]["description"]
    assert "CRM_REPORTING_CURRENCY" in described and "not added in" in described
