"""The audit log's read surfaces: /api/v1/audit, seed 002's audit-log route, the admin."""

import csv
import io

import pytest
from django.contrib.auth.models import Group

from compliance.models import AuditEvent
from compliance.services import audit_record
from contacts import services
from contacts.tests.factories import ContactFactory
from crm_platform.actor import Actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def trail(system_actor):
    contact = ContactFactory(external_id="user_123")
    services.note_create(contact=contact, body="bp 150/95", actor=system_actor)
    audit_record(actor=Actor("user", "7", "req-abc", "10.0.0.9"), action="phi.read", obj=contact)
    audit_record(actor=system_actor, action="other.thing", object_type="tests.thing", object_id=1)
    return contact


def test_audit_api_needs_audit_read(key_client, trail):
    assert key_client(["contacts:read"]).get("/api/v1/audit").status_code == 403
    assert key_client(["admin"]).get("/api/v1/audit").status_code == 200


def test_audit_api_filters_by_object_actor_and_since(key_client, trail):
    client = key_client(["audit:read"])
    by_object = client.get("/api/v1/audit", {"object": f"contacts.contact:{trail.pk}"}).json()["results"]
    assert by_object and {e["object_id"] for e in by_object} == {str(trail.pk)}
    by_actor = client.get("/api/v1/audit", {"actor": "user:7"}).json()["results"]
    assert [e["request_id"] for e in by_actor] == ["req-abc"]
    assert client.get("/api/v1/audit", {"since": "2999-01-01"}).json()["results"] == []
    assert len(client.get("/api/v1/audit", {"since": "2000-01-01T00:00:00Z"}).json()["results"]) >= 3


def test_audit_api_paginates_with_a_cursor(key_client, trail):
    client = key_client(["audit:read"])
    first = client.get("/api/v1/audit", {"limit": 2}).json()
    assert len(first["results"]) == 2 and first["next"]
    second = client.get(first["next"]).json()
    assert {e["id"] for e in first["results"]}.isdisjoint({e["id"] for e in second["results"]})


@pytest.mark.parametrize(
    "params",
    [{"object": "nocolon"}, {"actor": "robot:1"}, {"since": "yesterday"}, {"since": "2024-13-45"}, {"actor": "user:"}],
)
def test_audit_api_bad_filters_are_400(key_client, params):
    response = key_client(["audit:read"]).get("/api/v1/audit", params)
    assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error"


def test_seed_002_audit_log_lists_the_users_trail(key_client, trail):
    response = key_client(["audit:read"]).get("/api/crm/audit-log/user_123")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success" and body["userId"] == "user_123"
    actions = [row["action"] for row in body["data"]]
    assert "note.create" in actions and "phi.read" in actions and "other.thing" not in actions
    row = next(r for r in body["data"] if r["action"] == "phi.read")
    assert row["user_id"] == "user_123" and row["actor_type"] == "user" and row["ip_address"] == "10.0.0.9"
    assert set(row) >= {"entity_type", "entity_id", "created_at", "changes"}


def test_seed_002_audit_log_unknown_user_is_404_and_needs_the_scope(key_client, trail):
    assert key_client(["audit:read"]).get("/api/crm/audit-log/nobody").status_code == 404
    assert key_client(["contacts:read"]).get("/api/crm/audit-log/user_123").status_code == 403
    assert key_client(["audit:read"]).get("/api/crm/audit-log/user_123", {"limit": "x"}).status_code == 400


# ----------------------------------------------------------------------------- admin


@pytest.fixture
def officer(client, django_user_model):
    user = django_user_model.objects.create_user(
        username="officer", password="a-long-test-password", is_staff=True, email="officer@example.com"
    )
    user.groups.add(Group.objects.get(name="Compliance officer"))
    client.force_login(user)
    return user


def test_admin_audit_log_is_read_only(client, officer, trail):
    event = AuditEvent.objects.first()
    assert client.get("/admin/compliance/auditevent/").status_code == 200
    assert client.get("/admin/compliance/auditevent/add/").status_code == 403
    page = client.get(f"/admin/compliance/auditevent/{event.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.post(f"/admin/compliance/auditevent/{event.pk}/delete/").status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_admin_audit_log_filters_and_searches(client, officer, trail):
    listing = "/admin/compliance/auditevent/"
    for params in (
        {"action": "phi.read"},
        {"actor_kind__exact": "user"},
        {"object_type": "contacts.note"},
        {"q": "req-abc"},
        {"q": "user:7"},
        {"q": f"contact:{trail.pk}"},
        {"q": f"contacts.contact:{trail.pk}"},
    ):
        response = client.get(listing, params)
        assert response.status_code == 200, params
        assert response.context["cl"].result_count >= 1, params
    assert client.get(listing, {"q": "user:999"}).context["cl"].result_count == 0


def test_admin_audit_log_search_for_a_contact_id_that_is_no_number_finds_nothing(client, officer, trail):
    response = client.get("/admin/compliance/auditevent/", {"q": "contact:²"})  # a digit to isdigit(), not to int()
    assert response.status_code == 200
    assert response.context["cl"].result_count == 0


def test_admin_csv_export_is_formula_safe(client, officer, system_actor):
    audit_record(actor=system_actor, action="=HYPERLINK(1)", object_type="tests.thing", object_id="@x")
    ids = [str(pk) for pk in AuditEvent.objects.values_list("pk", flat=True)]
    response = client.post(
        "/admin/compliance/auditevent/", {"action": "export_csv", "_selected_action": ids, "index": 0}
    )
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:3] == ["id", "occurred_at", "actor_kind"]
    row = next(r for r in rows if "HYPERLINK" in r[4])
    assert row[4] == "'=HYPERLINK(1)" and row[6] == "'@x"


def test_who_viewed_this_patient_lists_reads_of_the_contact_and_its_records(
    client, officer, key_client, system_actor, django_user_model
):
    contact = ContactFactory()
    services.note_create(contact=contact, body="insulin dose", actor=system_actor)
    key_client(["contacts:read", "phi:read"], name="medical").get("/api/v1/notes", {"contact": contact.pk})
    coach = django_user_model.objects.create_user(username="coach1", password="a-long-test-password", is_staff=True)
    coach.groups.add(Group.objects.get(name="Coach"))
    audit_record(actor=Actor.for_user(coach), action="phi.read", obj=contact, changes={"fields": ["x"]})
    page = client.get(f"/admin/compliance/auditevent/who-viewed/{contact.pk}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "contacts.note:" in html and "api" in html and "coach1" in html
    change = client.get(f"/admin/contacts/contact/{contact.pk}/change/").content.decode()
    assert f"/admin/compliance/auditevent/who-viewed/{contact.pk}/" in change


def test_who_viewed_needs_the_audit_permission(client, django_user_model):
    sales = django_user_model.objects.create_user(username="s", password="a-long-test-password", is_staff=True)
    sales.groups.add(Group.objects.get(name="Sales"))
    client.force_login(sales)
    assert client.get("/admin/compliance/auditevent/who-viewed/1/").status_code == 403


@pytest.fixture
def long_trail(trail):
    """Events on many pages: on a table of one page every plan costs about the same and
    PostgreSQL may pick any."""
    from django.db import connection

    AuditEvent.objects.bulk_create(
        AuditEvent(actor_kind="system", actor_id="tests", action="activity.create", request_id=f"fill-{n}")
        for n in range(400)
    )
    with connection.cursor() as cursor:  # statistics of these rows, not an earlier test's empty table
        cursor.execute("ANALYZE compliance_auditevent")
    return trail


def _audit_list_queries(client, params):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.support import list_queries

    with CaptureQueriesContext(connection) as captured:
        response = client.get("/admin/compliance/auditevent/", params)
    assert response.status_code == 200 and response.context["cl"].result_count >= 1
    statements = list_queries(captured, "compliance_auditevent")
    assert statements
    return statements


@pytest.mark.parametrize(
    "params",
    [{"action": "other.thing"}, {"q": "req-abc"}, {"o": "1"}, {"o": "-1"}],  # o=1: occurred_at
)
def test_admin_audit_log_pages_read_through_an_index(client, officer, long_trail, params):
    """The log's filter by action, its search by request id and its sort by time are served by
    indexes, as on millions of rows (tests.support.list_plan; search_plan for a search)."""
    from tests.support import list_plan, search_plan

    for sql in _audit_list_queries(client, params):
        (search_plan if "q" in params and "WHERE" in sql else list_plan)(sql)  # not the filters' choices


def test_admin_audit_log_date_filter_reads_a_btree_of_times(client, officer, long_trail):
    """A B-tree, not a BRIN: PostgreSQL reads the newest time from it when planning, where a BRIN
    left it guessing from old statistics that "today" held no rows (it then sorted all of
    today's rows to show 50)."""
    from tests.support import index_names, index_plans

    params = {"occurred_at__gte": "2026-01-01 00:00:00+00:00", "occurred_at__lt": "2999-01-01 00:00:00+00:00"}
    [count] = [sql for sql in _audit_list_queries(client, params) if sql.startswith("SELECT COUNT(*)")]
    [plan] = index_plans([count])
    assert "audit_occurred_idx" in index_names(plan), plan


def test_admin_audit_log_sorts_only_by_time(client, officer, trail):
    import re

    html = client.get("/admin/compliance/auditevent/").content.decode()
    assert re.search(r'class="[^"]*sortable[^"]*column-occurred_at', html)
    for column in ("action", "actor_kind", "actor_id", "object_type", "object_id", "request_id"):
        assert not re.search(rf'class="[^"]*sortable[^"]*column-{column}', html), column
