"""Break-glass: staff without view_phi open one contact's medical fields for a while."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.core import mail
from django.utils import timezone

from compliance.models import AdminNotice, AuditEvent, BreakGlassGrant
from contacts import services
from contacts.models import Note
from contacts.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(system_actor):
    contact = ContactFactory()
    services.activity_record(
        contact=contact, type="lab_result", actor=system_actor, properties={"hba1c": 9.1}, apply_lifecycle=False
    )
    services.note_create(contact=contact, body="started metformin", actor=system_actor)
    return contact


@pytest.fixture
def officer(django_user_model):
    user = django_user_model.objects.create_user(
        username="officer", password="a-long-test-password", is_staff=True, email="officer@example.com"
    )
    user.groups.add(Group.objects.get(name="Compliance officer"))
    return user


@pytest.fixture
def sales(client, django_user_model):
    user = django_user_model.objects.create_user(username="rep", password="a-long-test-password", is_staff=True)
    user.groups.add(Group.objects.get(name="Sales"))
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="contacts", codename__in=["view_contact", "view_note"])
    )
    client.force_login(user)
    return user


def _request(client, contact, reason="Patient collapsed in clinic; need medication history now."):
    with_callbacks = client.post(f"/admin/compliance/auditevent/break-glass/{contact.pk}/", {"reason": reason})
    return with_callbacks


def test_break_glass_opens_the_contacts_medical_fields_audited_and_notified(
    client, sales, officer, patient, django_capture_on_commit_callbacks
):
    contact_page = f"/admin/contacts/contact/{patient.pk}/change/"
    assert "hba1c" not in client.get(contact_page).content.decode()
    assert "/break-glass/" in client.get(contact_page).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = _request(client, patient)
    assert response.status_code == 302 and response["Location"] == contact_page
    grant = BreakGlassGrant.objects.get(user=sales, contact=patient)
    assert timedelta(minutes=29) < grant.expires_at - grant.granted_at <= timedelta(minutes=30)
    granted = AuditEvent.objects.get(action="break_glass.granted")
    assert granted.actor_id == str(sales.pk) and granted.subject_id == patient.pk
    assert "collapsed" not in str(granted.changes)  # the reason stays on the grant
    assert [m.to for m in mail.outbox] == [["officer@example.com"]]
    assert "collapsed" not in mail.outbox[0].body and str(patient.pk) in mail.outbox[0].subject
    assert AdminNotice.objects.filter(source="break_glass").exists()

    html = client.get(contact_page).content.decode()
    assert "hba1c" in html
    read = AuditEvent.objects.get(action="phi.read", object_type="contacts.activity")
    assert read.changes["access"]["new"] == "break_glass" and read.actor_id == str(sales.pk)
    note = Note.objects.get(contact=patient)
    assert "metformin" in client.get(f"/admin/contacts/note/{note.pk}/change/").content.decode()


def test_break_glass_covers_only_that_contact(client, sales, patient, system_actor):
    other = ContactFactory()
    services.activity_record(
        contact=other, type="lab_result", actor=system_actor, properties={"ldl": 4.4}, apply_lifecycle=False
    )
    _request(client, patient)
    assert "ldl" not in client.get(f"/admin/contacts/contact/{other.pk}/change/").content.decode()


def test_break_glass_expires(client, sales, patient):
    _request(client, patient)
    BreakGlassGrant.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert "hba1c" not in client.get(f"/admin/contacts/contact/{patient.pk}/change/").content.decode()


def test_break_glass_needs_a_written_reason(client, sales, patient):
    response = _request(client, patient, reason="  because ")
    assert response.status_code == 200 and "at least" in response.content.decode()
    assert not BreakGlassGrant.objects.exists()


def test_staff_who_can_see_phi_need_no_break_glass(client, officer, patient):
    client.force_login(officer)
    response = _request(client, patient)
    assert response.status_code == 302 and not BreakGlassGrant.objects.exists()


def test_break_glass_for_an_unknown_contact_is_404(client, sales):
    assert client.post("/admin/compliance/auditevent/break-glass/999999/", {"reason": "x" * 20}).status_code == 404


def test_officers_review_grants_read_only(client, sales, officer, patient, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _request(client, patient)
    client.force_login(officer)
    grant = BreakGlassGrant.objects.get()
    page = client.get(f"/admin/compliance/breakglassgrant/{grant.pk}/change/")
    assert page.status_code == 200 and "collapsed" in page.content.decode()
    index = client.get("/admin/").content.decode()
    assert f"Break-glass access: staff user {sales.pk} to contact {patient.pk}" in index  # the notice


def test_break_glass_notices_are_not_shown_to_other_staff(client, sales, patient, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _request(client, patient)
    assert AdminNotice.objects.filter(source="break_glass").exists()
    assert "Break-glass access: staff user" not in client.get("/admin/").content.decode()


def test_a_compliance_officer_revokes_a_grant_and_its_access_ends_at_once(client, sales, officer, patient):
    """A grant was granted at once and could only run out: an officer who finds one wrong had no
    way to end it. The grants' page has "Revoke" for officers (audited); other staff get none."""
    _request(client, patient)
    grant = BreakGlassGrant.objects.get(user=sales, contact=patient)
    contact_page = f"/admin/contacts/contact/{patient.pk}/change/"
    assert "hba1c" in client.get(contact_page).content.decode()
    changelist = "/admin/compliance/breakglassgrant/"
    # The requester (view only, at most) cannot revoke: the action is not offered, and posting it does nothing.
    sales.user_permissions.add(Permission.objects.get(codename="view_breakglassgrant"))
    assert b'value="revoke"' not in client.get(changelist).content
    client.post(changelist, {"action": "revoke", "_selected_action": [grant.pk]})
    grant.refresh_from_db()
    assert grant.revoked_at is None

    client.force_login(officer)
    assert b'value="revoke"' in client.get(changelist).content
    response = client.post(changelist, {"action": "revoke", "_selected_action": [grant.pk]})
    assert response.status_code == 302
    grant.refresh_from_db()
    assert grant.revoked_at is not None
    revoked = AuditEvent.objects.get(action="break_glass.revoked")
    assert revoked.actor_id == str(officer.pk) and revoked.subject_id == patient.pk

    client.force_login(sales)
    assert "hba1c" not in client.get(contact_page).content.decode()
    # Revoking again changes nothing and writes no second row.
    client.force_login(officer)
    client.post(changelist, {"action": "revoke", "_selected_action": [grant.pk]})
    assert AuditEvent.objects.filter(action="break_glass.revoked").count() == 1
