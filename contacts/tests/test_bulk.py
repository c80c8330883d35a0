import pytest
from django.conf import settings
from django.test import override_settings

from compliance.models import AuditEvent
from contacts.models import Company, Contact
from contacts.tests.factories import ContactFactory
from crm_platform.models import OutboxMessage

pytestmark = pytest.mark.django_db
URL = "/api/v1/contacts/bulk-upsert"


def test_bulk_upsert_creates_updates_and_reports_bad_rows(writer):
    existing = ContactFactory(email="old@example.com", first_name="Old", tags=["keep"])
    company = Company.objects.create(name="Acme", domain="acme.com")
    rows = [
        {"email": "NEW@example.com", "first_name": "New", "phone": "+14155550123", "tags": ["a", "B"]},
        {"email": "old@example.com", "last_name": "Updated", "company": company.pk},
        {"email": "broken", "first_name": "X"},
        {"external_id": "app-7", "churn_risk": 0.4, "properties": {}},
        {"email": "new@example.com", "first_name": "Twice"},
        {"first_name": "No identity"},
        {"email": "ghost@example.com", "owner": 999999},
    ]
    response = writer.post(URL, {"contacts": rows}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["created", "updated", "error", "created", "error", "error", "error"]
    assert (body["created"], body["updated"], body["error"]) == (2, 1, 4)
    assert "email" in body["results"][2]["errors"]
    assert "earlier in this request" in body["results"][4]["errors"]["email"][0]
    assert "owner" in body["results"][6]["errors"]
    new = Contact.objects.get(email="new@example.com")
    assert (new.first_name, new.phone, new.tags) == ("New", "+14155550123", ["a", "b"])
    existing.refresh_from_db()
    assert (existing.first_name, existing.last_name, existing.company_id, existing.tags) == (
        "Old",
        "Updated",
        company.pk,
        ["keep"],
    )
    assert Contact.objects.get(external_id="app-7").churn_risk == 0.4
    assert AuditEvent.objects.filter(action__in=["contact.create", "contact.update"]).count() == 3
    assert OutboxMessage.objects.filter(topic__in=["contact.created", "contact.updated"]).count() == 3


def test_bulk_upsert_refuses_an_identity_conflict_row_but_not_the_rest(writer):
    a = ContactFactory(email="a@example.com")
    b = ContactFactory(email=None, external_id="u-b")
    rows = [{"email": "a@example.com", "external_id": "u-b"}, {"email": "c@example.com"}]
    results = writer.post(URL, {"contacts": rows}, format="json").json()["results"]
    assert results[0]["errors"] == {"email": [f"contact {a.pk}"], "external_id": [f"contact {b.pk}"]}
    assert results[1]["status"] == "created"


def test_bulk_upsert_fills_a_missing_identifier(writer):
    contact = ContactFactory(email="a@example.com", external_id=None)
    results = writer.post(URL, {"contacts": [{"email": "a@example.com", "external_id": "u-1"}]}, format="json")
    assert results.json()["results"][0] == {"index": 0, "status": "updated", "id": contact.pk}
    contact.refresh_from_db()
    assert contact.external_id == "u-1"


def test_bulk_upsert_follows_a_merge(writer, system_actor):
    from contacts.services import contact_merge

    survivor, loser = ContactFactory(email="s@example.com"), ContactFactory(email="l@example.com")
    contact_merge(survivor=survivor, loser=loser, actor=system_actor)
    results = writer.post(URL, {"contacts": [{"email": "l@example.com", "city": "Oslo"}]}, format="json").json()
    assert results["results"][0]["id"] == survivor.pk
    survivor.refresh_from_db()
    assert survivor.city == "Oslo"


def test_bulk_upsert_limits(writer, key_client):
    assert writer.post(URL, {"contacts": []}, format="json").status_code == 400
    too_many = [{"email": f"p{n}@example.com"} for n in range(1001)]
    assert writer.post(URL, {"contacts": too_many}, format="json").status_code == 400
    assert (
        key_client(["contacts:read"]).post(URL, {"contacts": [{"email": "a@b.co"}]}, format="json").status_code == 403
    )
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "bulk": "2/hour"}
    fresh = key_client(["contacts:write"], name="fresh")
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        codes = [
            fresh.post(URL, {"contacts": [{"email": f"r{n}@example.com"}]}, format="json").status_code for n in range(3)
        ]
    assert codes == [200, 200, 429]


def test_bulk_upsert_of_a_thousand_uses_a_bounded_number_of_queries(writer, django_assert_max_num_queries):
    for n in range(500):
        ContactFactory(email=f"p{n}@example.com")
    rows = [{"email": f"p{n}@example.com", "first_name": f"N{n}"} for n in range(1000)]
    writer.post(URL, {"contacts": [{"email": "warm@example.com"}]}, format="json")
    with django_assert_max_num_queries(20):
        body = writer.post(URL, {"contacts": rows}, format="json").json()
    assert (body["created"], body["updated"], body["error"]) == (500, 500, 0)
    assert Contact.objects.get(email="p499@example.com").first_name == "N499"


@pytest.mark.parametrize(
    "row",
    [
        {"email": "a@example.com", "company_id": "abc"},
        {"email": "a@example.com", "owner_id": [1]},
        {"email": "a@example.com", "date_of_birth": 20200101},
        {"email": "a@example.com", "tags": "not-a-list"},
        ["not", "an", "object"],
    ],
)
def test_wrongly_typed_rows_are_row_errors_not_500s(writer, row):
    response = writer.post(URL, {"contacts": [row, {"email": "ok@example.com"}]}, format="json")
    assert response.status_code == 200
    statuses = [r["status"] for r in response.json()["results"]]
    assert statuses == ["error", "created"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("last_login_at", "9999-12-31T23:59:59-23:59"),  # after 9999 in UTC: PostgreSQL refused it
        ("last_login_at", "0001-01-01T00:00:00+14:00"),  # before year 1 in UTC: stored, then no read loaded it
        ("churn_risk", "NaN"),  # passes the model's 0..1 check, then failed the table's
    ],
)
def test_a_value_python_parses_but_postgresql_cannot_keep_is_a_row_error_not_a_500(writer, field, value):
    """Rows skip the API's serializer; the model's own checks let these through, and the whole
    request answered 500 (or stored a contact no read could load)."""
    rows = [{"email": "a@example.com", field: value}, {"email": "ok@example.com"}]
    response = writer.post(URL, {"contacts": rows}, format="json")
    assert response.status_code == 200, response.content
    bad, ok = response.json()["results"]
    assert bad["status"] == "error" and field in bad["errors"], bad
    assert ok["status"] == "created"
    assert not Contact.objects.filter(email="a@example.com").exists()


def test_a_moment_with_an_offset_postgresql_refuses_is_kept_as_its_instant_in_utc(writer):
    rows = [{"email": "a@example.com", "last_login_at": "2024-05-01T10:00:00+16:00"}]
    response = writer.post(URL, {"contacts": rows}, format="json")
    assert response.status_code == 200 and response.json()["created"] == 1, response.content
    stored = Contact.objects.get(email="a@example.com").last_login_at
    assert stored.isoformat() == "2024-04-30T18:00:00+00:00"


def test_bulk_rows_writing_properties_without_a_required_custom_field_are_row_errors(writer):
    """The bulk upsert checks properties as the single create and update do."""
    from contacts.models import CustomFieldDefinition

    CustomFieldDefinition.objects.create(key="consent_version", label="Consent", type="string", required=True)
    ContactFactory(email="old@example.com", properties={"consent_version": "v1"})
    rows = [
        {"email": "new@example.com", "properties": {"consent_version": None}},
        {"email": "old@example.com", "properties": {}},
        {"email": "ok@example.com", "properties": {"consent_version": "v2"}},
    ]
    results = writer.post(URL, {"contacts": rows}, format="json").json()["results"]
    assert [r["status"] for r in results] == ["error", "error", "created"]
    assert results[0]["errors"] == results[1]["errors"] == {"properties": ["consent_version: required."]}
    assert Contact.objects.get(email="old@example.com").properties == {"consent_version": "v1"}
    # A new contact sent without properties lacks the field too (an update leaves them alone).
    rows = [{"email": "bare@example.com"}, {"email": "old@example.com", "first_name": "Old"}]
    results = writer.post(URL, {"contacts": rows}, format="json").json()["results"]
    assert [r["status"] for r in results] == ["error", "updated"]
    assert results[0]["errors"] == {"properties": ["consent_version: required."]}
    assert not Contact.objects.filter(email="bare@example.com").exists()
