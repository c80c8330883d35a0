"""The suppression list: an erased person's email and phone are refused by contact creation,
bulk upserts, CSV imports and inbound (provider or app) syncs, until the person signs up again."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from compliance.models import AuditEvent, Suppression
from compliance.suppression import suppression_add, suppression_check
from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from integrations.tasks import inbox_apply

pytestmark = pytest.mark.django_db

EMAIL = "gone@example.com"
PHONE = "+14155550188"


@pytest.fixture
def erased(key_client):
    contact = ContactFactory(email=EMAIL, phone=PHONE, external_id="app-9")
    response = key_client(["gdpr:write"]).post(f"/api/v1/contacts/{contact.pk}/erase")
    assert response.status_code == 200
    return contact


def test_only_hashes_are_stored(erased):
    stored = list(Suppression.objects.values_list("kind", "digest"))
    assert sorted(kind for kind, _ in stored) == ["email", "external_id", "phone"]
    assert all(len(d) == 64 and EMAIL not in d and PHONE not in d and "app-9" not in d for _, d in stored)


def test_api_create_refuses_a_suppressed_email(erased, key_client):
    response = key_client(["contacts:write"]).post("/api/v1/contacts", {"email": "  GONE@example.com "}, format="json")
    assert response.status_code == 400 and "email" in response.json()["error"]["fields"]
    assert not Contact.objects.filter(email=EMAIL).exists()


def test_api_update_refuses_a_suppressed_phone(erased, key_client):
    other = ContactFactory()
    response = key_client(["contacts:write"]).patch(f"/api/v1/contacts/{other.pk}", {"phone": PHONE}, format="json")
    assert response.status_code == 400 and "phone" in response.json()["error"]["fields"]


def test_bulk_upsert_refuses_the_suppressed_rows_only(erased, key_client):
    response = key_client(["contacts:write"]).post(
        "/api/v1/contacts/bulk-upsert",
        {"contacts": [{"email": EMAIL}, {"email": "fresh@example.com", "phone": PHONE}, {"email": "ok@example.com"}]},
        format="json",
    )
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["error", "error", "created"]
    assert "email" in results[0]["errors"] and "phone" in results[1]["errors"]
    assert not Contact.objects.filter(email__in=[EMAIL, "fresh@example.com"]).exists()


def test_csv_import_refuses_suppressed_rows_in_preview_and_import(erased, admin_client):
    csv_text = f"email,first_name\n{EMAIL},Back\nnew.one@example.com,New\n"
    upload = SimpleUploadedFile("contacts.csv", csv_text.encode(), content_type="text/csv")
    preview = admin_client.post("/admin/contacts/contact/import/", {"file": upload}).content.decode()
    assert "suppression list" in preview
    admin_client.post("/admin/contacts/contact/import/", {"confirm": "1", "payload": csv_text})
    assert Contact.objects.filter(email="new.one@example.com").exists()
    assert not Contact.objects.filter(email=EMAIL).exists()


def test_inbound_sync_refuses_a_suppressed_user(erased, key_client):
    events = key_client(["events:write"])
    response = events.post(
        "/api/v1/events",
        {"type": "profile_updated", "user": {"email": EMAIL}, "properties": {"first_name": "Back"}},
        format="json",
        HTTP_IDEMPOTENCY_KEY="sync-1",
    )
    assert response.status_code == 400 and "email" in response.json()["error"]["fields"]
    assert not Contact.objects.filter(email=EMAIL).exists()


def test_account_created_lifts_the_suppression_audited(erased, key_client):
    events = key_client(["events:write"])
    response = events.post(
        "/api/v1/events",
        {"type": "account_created", "user": {"email": EMAIL, "external_id": "app-9"}, "properties": {"phone": PHONE}},
        format="json",
        HTTP_IDEMPOTENCY_KEY="signup-again",
    )
    assert response.status_code == 202, response.content
    inbox_apply()
    assert Contact.objects.filter(email=EMAIL, phone=PHONE, external_id="app-9").exists()
    assert not Suppression.objects.filter(lifted_at__isnull=True).exists()
    assert Suppression.objects.filter(lifted_reason="account_created").count() == 3
    assert AuditEvent.objects.filter(action="suppression.lift").count() == 3


def test_suppression_add_is_idempotent_and_check_names_the_field(system_actor):
    assert suppression_add(actor=system_actor, email="x@example.com") == 1
    assert suppression_add(actor=system_actor, email="X@example.com ") == 0
    with pytest.raises(Exception) as refused:
        suppression_check(email="x@example.com")
    assert "email" in refused.value.message_dict


def test_admin_suppression_list_shows_hashes_and_finds_a_value(erased, admin_client):
    page = admin_client.get("/admin/compliance/suppression/")
    assert page.status_code == 200 and EMAIL.encode() not in page.content
    found = admin_client.get("/admin/compliance/suppression/", {"q": EMAIL})
    assert b"email" in found.content and found.context["cl"].result_count == 1
    assert (
        admin_client.get("/admin/compliance/suppression/", {"q": "nobody@example.com"}).context["cl"].result_count == 0
    )


def test_the_event_batch_refuses_and_lifts_the_same_way(erased, key_client):
    events = key_client(["events:write"])
    refused = events.post(
        "/api/v1/events/batch",
        {
            "events": [
                {"id": "b1", "type": "profile_updated", "user": {"email": EMAIL}, "properties": {}},
                # Would have been vouched for by b1's sign-up: refused with it.
                {"id": "b1b", "type": "food_logged", "user": {"email": EMAIL}},
            ]
        },
        format="json",
    ).json()
    assert refused["results"][0]["status"] == "rejected" and "email" in refused["results"][0]["errors"]
    assert refused["results"][1]["status"] == "rejected" and "user" in refused["results"][1]["errors"]
    accepted = events.post(
        "/api/v1/events/batch",
        {"events": [{"id": "b2", "type": "account_created", "user": {"email": EMAIL}, "properties": {}}]},
        format="json",
    ).json()
    assert accepted["results"][0]["status"] == "accepted", accepted
    inbox_apply()
    assert Contact.objects.filter(email=EMAIL).exists()
    assert not Suppression.objects.filter(kind="email", lifted_at__isnull=True).exists()
