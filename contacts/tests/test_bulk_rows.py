"""Bulk upsert rows that are wrong only together with the database: a null on a NOT NULL column,
two rows naming one contact by different keys. Each is that row's error, never the batch's."""

import pytest

from compliance.models import AuditEvent
from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from crm_platform.models import OutboxMessage

pytestmark = pytest.mark.django_db
URL = "/api/v1/contacts/bulk-upsert"


def test_a_null_for_a_not_null_field_of_a_new_contact_is_that_rows_error_as_in_the_single_contact_api(writer):
    single = writer.post("/api/v1/contacts", {"email": "one@example.com", "first_name": None}, format="json")
    assert single.status_code == 400 and "first_name" in single.json()["error"]["fields"]
    rows = [{"email": "good@example.com"}, {"email": "bad@example.com", "first_name": None}]
    response = writer.post(URL, {"contacts": rows}, format="json")
    assert response.status_code == 200, response.content
    good, bad = response.json()["results"]
    assert good["status"] == "created"
    assert bad["status"] == "error" and list(bad["errors"]) == ["first_name"], bad
    assert list(Contact.objects.values_list("email", flat=True)) == ["good@example.com"]


@pytest.mark.parametrize("field", ["last_name", "city", "country", "source"])
def test_a_null_for_a_not_null_field_of_an_existing_contact_is_that_rows_error_not_a_taken_identity(writer, field):
    contact = ContactFactory(email="old@example.com", **{field: "XX"})
    rows = [{"email": "old@example.com", field: None}, {"email": "new@example.com"}]
    response = writer.post(URL, {"contacts": rows}, format="json")
    assert response.status_code == 200, response.content
    old, new = response.json()["results"]
    assert old["status"] == "error" and list(old["errors"]) == [field], old
    assert "null" in old["errors"][field][0]
    assert new["status"] == "created"
    contact.refresh_from_db()
    assert getattr(contact, field) == "XX"


def test_a_null_for_a_nullable_field_still_clears_it(writer):
    contact = ContactFactory(email="old@example.com", last_login_at="2024-01-01T00:00:00Z")
    rows = [{"email": "old@example.com", "last_login_at": None, "date_of_birth": None}]
    response = writer.post(URL, {"contacts": rows}, format="json")
    assert response.json()["results"][0]["status"] == "updated", response.content
    contact.refresh_from_db()
    assert contact.last_login_at is None


def test_a_later_row_naming_the_same_contact_by_its_other_key_is_that_rows_error(writer):
    contact = ContactFactory(email="a@example.com", external_id="u-1", first_name="A", last_name="B")
    rows = [
        {"email": "a@example.com", "first_name": "First"},
        {"external_id": "u-1", "last_name": "Second"},
        {"email": "other@example.com"},
    ]
    response = writer.post(URL, {"contacts": rows}, format="json")
    assert response.status_code == 200, response.content
    first, second, other = response.json()["results"]
    assert first == {"index": 0, "status": "updated", "id": contact.pk}
    assert second["status"] == "error"
    assert second["errors"] == {"external_id": ["Names the same contact as row 0."]}
    assert other["status"] == "created"
    contact.refresh_from_db()
    assert (contact.first_name, contact.last_name) == ("First", "B")
    assert AuditEvent.objects.filter(action="contact.update", object_id=str(contact.pk)).count() == 1
    assert OutboxMessage.objects.filter(topic="contact.updated").count() == 1


def test_a_row_naming_a_merged_away_contact_and_a_row_naming_its_survivor_are_one_contact(writer, system_actor):
    from contacts.services import contact_merge

    survivor, loser = ContactFactory(email="s@example.com"), ContactFactory(email="l@example.com")
    contact_merge(survivor=survivor, loser=loser, actor=system_actor)
    rows = [{"email": "s@example.com", "city": "Oslo"}, {"email": "l@example.com", "city": "Rome"}]
    first, second = writer.post(URL, {"contacts": rows}, format="json").json()["results"]
    assert first == {"index": 0, "status": "updated", "id": survivor.pk}
    assert second["errors"] == {"email": ["Names the same contact as row 0."]}
    survivor.refresh_from_db()
    assert survivor.city == "Oslo"
