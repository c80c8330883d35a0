from decimal import Decimal

import pytest
from django.utils import timezone

from contacts import services
from contacts.models import Activity, Company, Contact, CustomFieldDefinition
from contacts.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader(key_client):
    return key_client(["contacts:read"])


def test_create_returns_201_with_normalized_fields(writer):
    response = writer.post(
        "/api/v1/contacts", {"email": "Ann@Example.com", "phone": "+44 20 7946 0958", "tags": ["VIP"]}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["email"], body["phone"], body["tags"], body["lifecycle_stage"]) == (
        "ann@example.com",
        "+442079460958",
        ["vip"],
        "visitor",
    )


def test_duplicate_email_is_409_naming_the_existing_contact(writer):
    existing = ContactFactory(email="ann@example.com")
    response = writer.post("/api/v1/contacts", {"email": "ANN@example.com"}, format="json")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "duplicate_contact" and error["fields"] == {"email": [f"contact {existing.pk}"]}


def test_bad_input_is_400_with_every_field_named(writer):
    response = writer.post(
        "/api/v1/contacts", {"email": "nope", "churn_risk": 3, "engagement_tier": "x"}, format="json"
    )
    assert response.status_code == 400
    assert {"email", "churn_risk", "engagement_tier"} <= set(response.json()["error"]["fields"])
    assert not Contact.objects.exists()


def test_read_scope_cannot_write_and_no_key_is_401(reader, api_client):
    assert reader.post("/api/v1/contacts", {"email": "a@b.co"}, format="json").status_code == 403
    assert api_client.get("/api/v1/contacts").status_code == 401


def test_list_filters_and_search(reader):
    ann = ContactFactory(email="ann.lee@example.com", first_name="Ann", last_name="Lee", tags=["vip"])
    ContactFactory(email="bob@example.com", first_name="Bob", last_name="Stone", lifecycle_stage="lead")
    ContactFactory(email="zed@example.com", phone="+14155550123")

    def emails(**params):
        response = reader.get("/api/v1/contacts", params)
        assert response.status_code == 200, response.content
        return sorted(row["email"] for row in response.json()["results"])

    assert emails(q="ann") == ["ann.lee@example.com"]
    assert emails(q="Ann Lee") == ["ann.lee@example.com"]
    assert emails(q="lee ann") == ["ann.lee@example.com"]
    assert emails(q="bob@") == ["bob@example.com"]
    assert emails(q="415 555") == ["zed@example.com"]
    assert emails(stage="lead") == ["bob@example.com"]
    assert emails(tag="VIP") == ["ann.lee@example.com"]
    assert emails(email="ANN.LEE@example.com") == ["ann.lee@example.com"]
    assert emails(updated_since=(timezone.now() + timezone.timedelta(hours=1)).isoformat()) == []
    assert reader.get("/api/v1/contacts", {"stage": "nope"}).status_code == 400
    assert ann.pk


def test_delete_archives_and_hides_from_lists(writer):
    contact = ContactFactory()
    assert writer.delete(f"/api/v1/contacts/{contact.pk}").status_code == 204
    assert writer.get("/api/v1/contacts").json()["results"] == []
    assert writer.get(f"/api/v1/contacts/{contact.pk}").json()["is_archived"] is True
    assert len(writer.get("/api/v1/contacts", {"archived": "true"}).json()["results"]) == 1


def test_patch_updates_and_unknown_contact_is_404(writer):
    contact = ContactFactory()
    response = writer.patch(f"/api/v1/contacts/{contact.pk}", {"engagement_tier": "gold"}, format="json")
    assert response.status_code == 200 and response.json()["engagement_tier"] == "gold"
    missing = writer.patch("/api/v1/contacts/999999", {"engagement_tier": "gold"}, format="json")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_timeline_is_newest_first_and_paged(reader, system_actor):
    contact = ContactFactory()
    for n in range(3):
        services.activity_record(
            contact=contact,
            type=f"t{n}",
            actor=system_actor,
            occurred_at=timezone.now() - timezone.timedelta(days=3 - n),
            apply_lifecycle=False,
        )
    page = reader.get(f"/api/v1/contacts/{contact.pk}/timeline", {"limit": 2}).json()
    assert [row["type"] for row in page["results"]] == ["t2", "t1"]
    assert [row["type"] for row in reader.get(page["next"]).json()["results"]] == ["t0"]


def _batch_at_one_instant(contact, count):
    """Events of one batch share their timestamp: only the id orders them."""
    at = timezone.now() - timezone.timedelta(hours=1)
    return [Activity.objects.create(contact=contact, type="food_log", occurred_at=at).pk for _ in range(count)]


def test_timeline_pages_neither_repeat_nor_skip_rows_when_an_event_arrives_between_them(reader):
    contact = ContactFactory()
    batch = _batch_at_one_instant(contact, 3)
    url = f"/api/v1/contacts/{contact.pk}/timeline"
    first = reader.get(url, {"limit": 2}).json()
    Activity.objects.create(contact=contact, type="page_viewed", occurred_at=timezone.now())
    second = reader.get(first["next"]).json()
    seen = [row["id"] for row in first["results"] + second["results"]]
    assert seen == sorted(batch, reverse=True) and second["next"] is None


def test_timeline_previous_link_returns_the_page_before_within_one_instant(reader):
    contact = ContactFactory()
    batch = sorted(_batch_at_one_instant(contact, 5), reverse=True)
    url = f"/api/v1/contacts/{contact.pk}/timeline"
    first = reader.get(url, {"limit": 2}).json()
    second = reader.get(first["next"]).json()
    third = reader.get(second["next"]).json()
    assert [row["id"] for row in third["results"]] == batch[4:] and third["next"] is None
    back = reader.get(third["previous"]).json()
    assert [row["id"] for row in back["results"]] == batch[2:4]
    back = reader.get(back["previous"]).json()
    assert [row["id"] for row in back["results"]] == batch[:2] and back["previous"] is None
    assert [row["id"] for row in reader.get(back["next"]).json()["results"]] == batch[2:4]


def test_merge_endpoint(writer):
    survivor, loser = ContactFactory(), ContactFactory()
    response = writer.post(f"/api/v1/contacts/{survivor.pk}/merge", {"loser": loser.pk}, format="json")
    assert response.status_code == 200
    loser.refresh_from_db()
    assert loser.merged_into_id == survivor.pk
    again = writer.post(f"/api/v1/contacts/{survivor.pk}/merge", {"loser": loser.pk}, format="json")
    assert again.status_code == 400


def test_merging_two_records_that_each_hold_the_same_app_ticket_keeps_both_tickets(writer, system_actor):
    """The app's ticket id is unique per contact: the same ticket sent under each of a person's
    two records is on both. The merge moves the loser's copy without the id (the survivor's
    keeps it) instead of failing on the unique index."""
    from contacts.models import Ticket

    survivor, loser = ContactFactory(), ContactFactory()
    kept = services.ticket_create(contact=survivor, subject="Help", external_id="t-1", actor=system_actor)
    copy = services.ticket_create(contact=loser, subject="Help", external_id="t-1", actor=system_actor)
    other = services.ticket_create(contact=loser, subject="Other", external_id="t-2", actor=system_actor)
    response = writer.post(f"/api/v1/contacts/{survivor.pk}/merge", {"loser": loser.pk}, format="json")
    assert response.status_code == 200, response.content
    tickets = Ticket.objects.filter(contact=survivor).values_list("pk", "external_id")
    assert set(tickets) == {(kept.pk, "t-1"), (copy.pk, None), (other.pk, "t-2")}


def test_lifecycle_endpoint_refuses_a_disallowed_move(writer):
    contact = ContactFactory()
    ok = writer.post(f"/api/v1/contacts/{contact.pk}/lifecycle", {"stage": "lead", "reason": "form"}, format="json")
    assert ok.status_code == 200 and ok.json()["lifecycle_stage"] == "lead"
    bad = writer.post(f"/api/v1/contacts/{contact.pk}/lifecycle", {"stage": "won_back", "reason": "x"}, format="json")
    assert bad.status_code == 400 and "lifecycle_stage" in bad.json()["error"]["fields"]


def test_a_lifecycle_reason_stays_out_of_the_audit_log(writer, key_client):
    """Staff type the reason freely; audit rows are kept for ever and erasure cannot blank them,
    so they record that a reason was given, not its text. Found by a review."""
    from compliance.models import AuditEvent
    from contacts.models import LifecycleTransition

    contact = ContactFactory(first_name="Jane")
    reason = "Jane Roe called: paused, chemotherapy"
    response = writer.post(
        f"/api/v1/contacts/{contact.pk}/lifecycle", {"stage": "lead", "reason": reason}, format="json"
    )
    assert response.status_code == 200
    assert LifecycleTransition.objects.get(contact=contact).reason == reason  # kept where erasure reaches it
    changes = AuditEvent.objects.get(action="contact.lifecycle").changes
    assert "chemotherapy" not in str(changes) and changes["reason_given"]["new"] is True


def test_tickets_need_their_own_scope(key_client):
    contact = ContactFactory()
    payload = {"contact": contact.pk, "subject": "Refill late", "priority": "high"}
    assert key_client(["contacts:write"]).post("/api/v1/tickets", payload, format="json").status_code == 403
    response = key_client(["tickets:write"]).post("/api/v1/tickets", payload, format="json")
    assert response.status_code == 201 and response.json()["sla_due_at"]


def test_orders_and_subscriptions(writer):
    contact = ContactFactory(lifecycle_stage="patient")
    order = writer.post(
        "/api/v1/orders", {"contact": contact.pk, "amount": "49.00", "external_id": "o1"}, format="json"
    )
    assert order.status_code == 201
    assert (
        writer.post(
            "/api/v1/orders", {"contact": contact.pk, "amount": "49.00", "external_id": "o1"}, format="json"
        ).status_code
        == 200
    )
    sub = writer.post("/api/v1/subscriptions", {"contact": contact.pk, "plan": "monthly"}, format="json")
    assert sub.status_code == 201
    contact.refresh_from_db()
    assert contact.lifecycle_stage == "subscriber"
    cancelled = writer.post(f"/api/v1/subscriptions/{sub.json()['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"


def test_an_order_or_subscription_sent_again_under_its_id_with_other_values_is_a_409(writer):
    """Sent again as it was, it answers 200 with the row; with another amount, currency or plan
    it answered 200 with the first values, as if recorded. It is not the order we have."""
    from contacts.models import Order, Subscription

    contact = ContactFactory(lifecycle_stage="patient")
    first = {"contact": contact.pk, "amount": "49.00", "currency": "EUR", "external_id": "o-9"}
    assert writer.post("/api/v1/orders", first, format="json").status_code == 201
    again = writer.post("/api/v1/orders", {**first, "amount": "94.00", "currency": "usd"}, format="json")
    assert again.status_code == 409, again.content
    error = again.json()["error"]
    assert error["code"] == "order_differs" and set(error["fields"]) == {"amount", "currency"}
    assert Order.objects.get(external_id="o-9").amount == Decimal("49.00")

    start = {"contact": contact.pk, "plan": "monthly", "amount": "20.00", "external_id": "s-9"}
    assert writer.post("/api/v1/subscriptions", start, format="json").status_code == 201
    assert writer.post("/api/v1/subscriptions", start, format="json").status_code == 200
    other = writer.post("/api/v1/subscriptions", {**start, "plan": "yearly"}, format="json")
    assert other.status_code == 409 and other.json()["error"]["fields"].keys() == {"plan"}
    assert Subscription.objects.get(external_id="s-9").plan == "monthly"


def test_contact_list_queries_are_bounded(reader, django_assert_max_num_queries):
    for _ in range(20):
        ContactFactory()
    reader.get("/api/v1/contacts")  # the key is now cached
    with django_assert_max_num_queries(2):
        assert len(reader.get("/api/v1/contacts").json()["results"]) == 20


def test_companies_create_read_update_and_refuse_a_taken_domain(writer):
    created = writer.post("/api/v1/companies", {"name": "Acme", "domain": "ACME.com"}, format="json")
    assert created.status_code == 201 and created.json()["domain"] == "acme.com"
    other = writer.post("/api/v1/companies", {"name": "Other", "domain": "other.com"}, format="json").json()
    company_id = created.json()["id"]
    patched = writer.patch(f"/api/v1/companies/{company_id}", {"industry": "health"}, format="json")
    assert patched.status_code == 200 and patched.json()["industry"] == "health"
    taken = writer.patch(f"/api/v1/companies/{company_id}", {"domain": "other.com"}, format="json")
    assert taken.status_code == 409 and taken.json()["error"]["fields"] == {"domain": [f"company {other['id']}"]}
    assert writer.get(f"/api/v1/companies/{company_id}").json()["name"] == "Acme"


def test_a_company_size_beyond_its_column_is_a_400_and_writes_nothing(writer):
    """Sizes past the integer column were a database error (500); the service now runs the
    model's own range check."""
    refused = writer.post("/api/v1/companies", {"name": "Huge", "size": 2**31}, format="json")
    assert refused.status_code == 400 and "size" in refused.json()["error"]["fields"], refused.content
    assert not Company.objects.filter(name="Huge").exists()
    company = writer.post("/api/v1/companies", {"name": "Acme", "size": 10}, format="json").json()
    patched = writer.patch(f"/api/v1/companies/{company['id']}", {"size": 2**63}, format="json")
    assert patched.status_code == 400 and "size" in patched.json()["error"]["fields"], patched.content
    assert Company.objects.get(pk=company["id"]).size == 10


def test_medical_fields_need_phi_read(key_client, system_actor):
    contact = ContactFactory()
    services.activity_record(
        contact=contact, type="lab_result", actor=system_actor, properties={"hba1c": 9.1}, apply_lifecycle=False
    )
    services.ticket_create(contact=contact, subject="Side effects", body="nausea since dose change", actor=system_actor)
    plain = key_client(["contacts:read", "tickets:read"], name="plain")
    medical = key_client(["contacts:read", "tickets:read", "phi:read"], name="medical")
    admin_scope = key_client(["admin"], name="admin")
    for client, sees in ((plain, False), (admin_scope, False), (medical, True)):
        timeline = client.get(f"/api/v1/contacts/{contact.pk}/timeline").json()["results"][0]
        ticket = client.get("/api/v1/tickets").json()["results"][0]
        assert ("properties" in timeline) is sees and ("body" in ticket) is sees
    assert "hba1c" not in str(plain.get(f"/api/v1/contacts/{contact.pk}/timeline").content)


def test_only_staff_who_may_merge_can_merge_through_the_api(client, django_user_model):
    from django.contrib.auth.models import Group

    survivor, loser = ContactFactory(), ContactFactory()
    marketer = django_user_model.objects.create_user(username="m", password="a-long-pass-123", is_staff=True)
    marketer.groups.add(Group.objects.get(name="Marketing"))
    client.force_login(marketer)
    response = client.post(
        f"/api/v1/contacts/{survivor.pk}/merge", {"loser": loser.pk}, content_type="application/json"
    )
    assert response.status_code == 403
    loser.refresh_from_db()
    assert loser.merged_into_id is None


def test_staff_in_a_session_may_do_no_more_than_their_role_allows_in_the_admin(staff_user, system_actor, key_client):
    """The contacts:write scope stands for change_contact, which Marketing and Sales hold; the
    routes recording orders, notes and subscriptions asked for nothing more, so a Marketing
    user recorded a 5,000 order (it feeds lifetime value) the admin forbids. Found by a review."""
    from django.contrib.auth.models import Group
    from rest_framework.test import APIClient

    from contacts.models import Note, Order, Subscription
    from contacts.services import subscription_start
    from crm_platform.roles import MARKETING, SALES

    contact = ContactFactory()
    subscription, _ = subscription_start(contact=contact, plan="Foundation", actor=system_actor)
    client = APIClient()
    client.force_login(staff_user)
    staff_user.groups.add(Group.objects.get(name=MARKETING))
    order = {"contact": contact.pk, "amount": "5000"}
    assert client.post("/api/v1/orders", order, format="json").status_code == 403
    assert client.post("/api/v1/notes", {"contact": contact.pk, "body": "n"}, format="json").status_code == 403
    assert client.post(f"/api/v1/subscriptions/{subscription.pk}/cancel", format="json").status_code == 403
    assert client.patch(f"/api/v1/contacts/{contact.pk}", {"city": "Oslo"}, format="json").status_code == 200
    staff_user.groups.add(Group.objects.get(name=SALES))
    staff_user = type(staff_user).objects.get(pk=staff_user.pk)  # permissions are cached per object
    client.force_login(staff_user)
    assert client.post("/api/v1/notes", {"contact": contact.pk, "body": "n"}, format="json").status_code == 201
    response = client.post("/api/v1/orders", order, format="json")
    assert response.status_code == 403 and "contacts.add_order" in response.json()["error"]["message"]
    assert (Order.objects.count(), Note.objects.count()) == (0, 1)
    assert Subscription.objects.get(pk=subscription.pk).status == subscription.status
    assert (
        key_client(["contacts:write"]).post("/api/v1/orders", order, format="json").status_code == 201
    )  # keys: scopes


def test_subscription_starting_too_late_for_its_default_renewal_is_400(writer):
    contact = ContactFactory()
    response = writer.post(
        "/api/v1/subscriptions",
        {"contact": contact.pk, "plan": "monthly", "started_at": "9999-12-31T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"started_at"}


def test_an_order_in_a_currency_of_non_ascii_letters_is_400(writer):
    contact = ContactFactory()
    response = writer.post("/api/v1/orders", {"contact": contact.pk, "amount": "5", "currency": "ÄÖÜ"}, format="json")
    assert response.status_code == 400 and set(response.json()["error"]["fields"]) == {"currency"}
    ok = writer.post("/api/v1/orders", {"contact": contact.pk, "amount": "5", "currency": "eur"}, format="json")
    assert ok.status_code == 201 and ok.json()["currency"] == "EUR"


@pytest.fixture
def consent_required():
    return CustomFieldDefinition.objects.create(
        key="consent_version", label="Consent version", type="string", required=True
    )


@pytest.mark.parametrize("body", [{}, {"properties": {}}, {"properties": {"consent_version": None}}])
def test_create_without_a_required_custom_field_is_400_naming_it(writer, consent_required, body):
    response = writer.post("/api/v1/contacts", {"email": "req@example.com", **body}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"properties": ["consent_version: required."]}
    assert not Contact.objects.filter(email="req@example.com").exists()


def test_update_removing_or_nulling_a_required_custom_field_is_400(writer, consent_required):
    created = writer.post(
        "/api/v1/contacts", {"email": "req@example.com", "properties": {"consent_version": "v2"}}, format="json"
    )
    assert created.status_code == 201
    url = f"/api/v1/contacts/{created.json()['id']}"
    for properties in ({}, {"consent_version": None}):
        response = writer.patch(url, {"properties": properties}, format="json")
        assert response.status_code == 400
        assert response.json()["error"]["fields"] == {"properties": ["consent_version: required."]}
    assert writer.patch(url, {"city": "Oslo"}, format="json").status_code == 200  # properties untouched
    assert Contact.objects.get(email="req@example.com").properties == {"consent_version": "v2"}


def test_an_order_recorded_again_may_be_refunded_or_cancelled_and_nothing_else(writer):
    """The same external id again was answered with the stored order whatever the new status:
    a refund was silently dropped, and lifetime value kept counting it. Found by a review."""
    from compliance.models import AuditEvent
    from contacts.models import Order

    contact, other = ContactFactory(), ContactFactory()
    order = {"contact": contact.pk, "amount": "79.00", "external_id": "pi_77"}
    assert writer.post("/api/v1/orders", order, format="json").status_code == 201
    again = writer.post("/api/v1/orders", order, format="json")
    assert again.status_code == 200 and again.json()["status"] == "paid"
    refund = writer.post("/api/v1/orders", {**order, "status": "refunded"}, format="json")
    assert refund.status_code == 200 and refund.json()["status"] == "refunded"
    assert Order.objects.get(external_id="pi_77").status == "refunded"
    assert AuditEvent.objects.get(action="order.status").changes["status"] == {"old": "paid", "new": "refunded"}
    back = writer.post("/api/v1/orders", {**order, "status": "paid"}, format="json")
    assert back.status_code == 409 and back.json()["error"]["code"] == "order_conflict"
    theirs = writer.post("/api/v1/orders", {**order, "contact": other.pk, "status": "refunded"}, format="json")
    assert theirs.status_code == 409
    assert Order.objects.get(external_id="pi_77").status == "refunded" and Order.objects.count() == 1


def test_a_contact_made_at_a_later_stage_has_it_in_its_history_and_the_funnels(key_client):
    """Made as a patient, it had no transition into Patient: the purchase funnel, which reads
    the transitions, never counted it. Found by a review."""
    from contacts.models import LifecycleTransition

    client = key_client(["contacts:write", "contacts:read", "leads:read"])
    made = client.post("/api/v1/contacts", {"email": "pt@example.com", "lifecycle_stage": "patient"}, format="json")
    assert made.status_code == 201
    history = LifecycleTransition.objects.get(contact_id=made.json()["id"])
    assert (history.from_stage, history.to_stage, history.reason) == ("visitor", "patient", "created at this stage")
    assert (
        client.post("/api/v1/orders", {"contact": made.json()["id"], "amount": "50"}, format="json").status_code == 201
    )
    funnel = client.get("/api/v1/funnels/purchase").json()
    assert (funnel["entered"], funnel["converted"]) == (1, 1)
    visitor = client.post("/api/v1/contacts", {"email": "v@example.com"}, format="json").json()
    assert not LifecycleTransition.objects.filter(contact_id=visitor["id"]).exists()


@pytest.mark.parametrize("updated_since", ["2000-01-24T13:40:34+23:28", "2999-01-24T13:40:34-23:28"])
def test_updated_since_with_an_offset_postgresql_refuses_is_read_in_utc(reader, updated_since):
    # Python reads offsets up to 23:59, PostgreSQL none beyond 15:59: passed on as given, a 500.
    contact = ContactFactory(email="tz@example.com")
    reader.raise_request_exception = False
    response = reader.get("/api/v1/contacts", {"updated_since": updated_since})
    assert response.status_code == 200, response.content
    expected = [contact.email] if updated_since.startswith("2000") else []
    assert [row["email"] for row in response.json()["results"]] == expected


@pytest.mark.django_db(transaction=True)
def test_a_lifecycle_move_on_a_contact_erased_while_it_waits_is_a_404(key_client):
    """Found by the view, then erased (another request) while the move waits for the contact's
    row lock: the service's locked read found no row and the request answered 500."""
    from tests.support import behind_a_lock

    contact = ContactFactory(email="erased.meanwhile@example.com", lifecycle_stage="visitor")
    client = key_client(["contacts:write"])
    client.raise_request_exception = False
    answer = behind_a_lock(
        "DELETE FROM contacts_contact WHERE id = %s",
        [contact.pk],
        lambda: client.post(
            f"/api/v1/contacts/{contact.pk}/lifecycle", {"stage": "lead", "reason": "x"}, format="json"
        ),
    )
    assert answer.status_code == 404, answer.content
    assert answer.json()["error"]["code"] == "not_found"
