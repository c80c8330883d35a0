"""Every read of medical data through the API or the admin writes phi.read audit rows."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from compliance.models import AuditEvent
from contacts import services
from contacts.models import Note
from contacts.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(system_actor):
    contact = ContactFactory(external_id="app-user-1")
    for value in (9.1, 7.2, 6.4):
        services.activity_record(
            contact=contact, type="lab_result", actor=system_actor, properties={"hba1c": value}, apply_lifecycle=False
        )
    services.note_create(contact=contact, body="started metformin", actor=system_actor)
    services.ticket_create(contact=contact, subject="Side effects", body="nausea", actor=system_actor)
    return contact


def _reads(**filters):
    return AuditEvent.objects.filter(action="phi.read", **filters)


def test_an_api_list_showing_phi_writes_one_row_per_object(key_client, patient):
    client = key_client(["contacts:read", "phi:read"], name="medical")
    client.get(f"/api/v1/contacts/{patient.pk}/timeline")  # warm the key cache
    before = _reads().count()
    response = client.get(f"/api/v1/contacts/{patient.pk}/timeline")
    assert response.status_code == 200 and len(response.json()["results"]) == 3
    rows = list(_reads().order_by("id")[before:])
    assert len(rows) == 3
    assert {r.object_type for r in rows} == {"contacts.activity"}
    assert {r.subject_id for r in rows} == {patient.pk}
    assert rows[0].actor_kind == "api_key" and rows[0].request_id == response["X-Request-ID"]
    assert rows[0].changes["fields"]["new"] == ["properties"] and rows[0].changes["channel"]["new"] == "api"
    assert "9.1" not in str(rows[0].changes)  # field names, never values


def test_one_insert_per_list_response(key_client, patient):
    client = key_client(["contacts:read", "phi:read"], name="medical")
    client.get(f"/api/v1/contacts/{patient.pk}/timeline")
    with CaptureQueriesContext(connection) as captured:
        client.get(f"/api/v1/contacts/{patient.pk}/timeline")
    inserts = [q for q in captured.captured_queries if "INSERT INTO compliance_auditevent" in q["sql"]]
    assert len(inserts) == 1


def test_single_reads_of_notes_and_tickets_are_audited(key_client, patient):
    client = key_client(["contacts:read", "tickets:read", "phi:read"], name="medical")
    ticket_id = client.get("/api/v1/tickets").json()["results"][0]["id"]
    client.get(f"/api/v1/tickets/{ticket_id}")
    client.get("/api/v1/notes", {"contact": patient.pk})
    assert _reads(object_type="contacts.ticket", object_id=str(ticket_id)).count() == 2
    assert _reads(object_type="contacts.note", subject_id=patient.pk).count() == 1


def test_callers_without_phi_read_see_no_phi_and_write_no_read_rows(key_client, patient):
    client = key_client(["contacts:read", "tickets:read"], name="plain")
    client.get(f"/api/v1/contacts/{patient.pk}/timeline")
    client.get("/api/v1/tickets")
    assert not _reads().exists()


def _staff(django_user_model, username, group=None):
    user = django_user_model.objects.create_user(username=username, password="a-long-test-password", is_staff=True)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def test_admin_change_page_inlines_and_changelist_reads_are_audited(client, django_user_model, patient):
    coach = _staff(django_user_model, "coach", "Coach")
    coach.user_permissions.add(*_perms("contacts", ["view_contact", "view_note", "view_ticket", "view_activity"]))
    client.force_login(coach)
    assert client.get(f"/admin/contacts/contact/{patient.pk}/change/").status_code == 200
    assert _reads(object_type="contacts.activity", subject_id=patient.pk).count() == 3
    assert _reads(object_type="contacts.activity").first().changes["channel"]["new"] == "admin"
    note = Note.objects.get(contact=patient)
    assert client.get(f"/admin/contacts/note/{note.pk}/change/").status_code == 200
    assert _reads(object_type="contacts.note", object_id=str(note.pk), actor_id=str(coach.pk)).count() == 1
    response = client.get("/admin/contacts/note/")
    assert response.status_code == 200
    assert _reads(object_type="contacts.note").count() >= 1


def test_staff_without_view_phi_leave_no_read_rows_in_the_admin(client, django_user_model, patient):
    sales = _staff(django_user_model, "sales", "Sales")
    sales.user_permissions.add(*_perms("contacts", ["view_contact", "view_note"]))
    client.force_login(sales)
    html = client.get(f"/admin/contacts/contact/{patient.pk}/change/").content.decode()
    assert "hba1c" not in html
    assert not _reads().exists()


def _perms(app, codenames):
    return list(Permission.objects.filter(content_type__app_label=app, codename__in=codenames))
