"""GDPR erasure through its entry points: the API, seed 002's DELETE /api/crm/users/:userId and
the admin action, all running compliance.gdpr.contact_erase."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from decimal import Decimal

import pytest
from django.apps import apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import connection, models
from django.urls import reverse
from django.utils import timezone

from compliance.consent import consent_grant, restriction_set
from compliance.gdpr import erasure_subject, legal_hold_place, legal_hold_release
from compliance.models import AuditEvent, Consent, Erasure, LegalHold, Suppression
from compliance.subjects import is_registered
from compliance.suppression import digest
from contacts import services as contacts
from contacts.models import Activity, Contact, ExternalRef
from contacts.tests.factories import ContactFactory
from crm_platform.models import IdempotencyRecord, OutboxMessage

pytestmark = pytest.mark.django_db

EMAIL = "erase.me@example.com"
PHONE = "+14155550177"


@pytest.fixture
def gdpr(key_client):
    return key_client(["gdpr:write"])


@pytest.fixture
def person(system_actor):
    """A contact with something in every app: timeline, note, ticket, order, subscription,
    lifecycle history, a provider ref, a lead, a deal, consents, a restriction, a released hold,
    an admin log entry, and a merged-away duplicate."""
    contact = contacts.contact_create(
        actor=system_actor,
        email=EMAIL,
        external_id="app-user-77",
        first_name="Erasmus",
        last_name="Forgetme",
        phone=PHONE,
        city="Lisbon",
    )
    contacts.lifecycle_transition(contact=contact, to_stage="lead", reason="test", actor=system_actor)
    contacts.activity_record(contact=contact, type="food_logged", actor=system_actor, properties={"kcal": 420})
    contacts.note_create(contact=contact, body="Erasmus reports knee pain", actor=system_actor)
    contacts.ticket_create(contact=contact, subject="Erasmus cannot log in", body="details", actor=system_actor)
    contacts.order_record(contact=contact, amount=Decimal("49.00"), external_id="ord-77", actor=system_actor)
    contacts.subscription_start(contact=contact, plan="premium", external_id="sub-77", actor=system_actor)
    ExternalRef.objects.create(
        provider="hubspot",
        object_type="contact",
        external_id="hs-901",
        content_type=ContentType.objects.get_for_model(Contact),
        object_id=contact.pk,
    )
    from leads.models import Deal, Pipeline
    from leads.services import lead_capture

    lead_capture(actor=system_actor, email=EMAIL, source="website_form", first_name="Erasmus")
    pipeline = Pipeline.objects.filter(is_default=True).first()
    deal = Deal.objects.create(
        name="Erasmus Forgetme premium",
        pipeline=pipeline,
        stage=pipeline.stages.first(),
        contact=contact,
        amount=Decimal("500"),
        plan="premium",
    )
    consent_grant(contact=contact, purpose="marketing_email", source="signup", actor=system_actor, ip="10.0.0.7")
    restriction_set(contact=contact, reason="disputed accuracy", actor=system_actor)
    hold = legal_hold_place(contact=contact, reason="case 12", actor=system_actor)
    legal_hold_release(hold=hold, actor=system_actor)
    LogEntry.objects.log_actions(
        user_id=_admin_id(),
        queryset=[contact],
        action_flag=CHANGE,
        change_message="Changed first_name.",
        single_object=True,
    )
    # Inbound app events: one applied (the sync log records it by the app user id), one still queued.
    from integrations.inbound import event_parse
    from integrations.inbox import Entry, inbox_accept, inbox_apply

    def queue(key, body):
        entry = Entry(key, key, event_parse(body))
        inbox_accept(owner="key:0", route="event", actor=system_actor, entries=[entry])

    queue("applied", {"type": "user_logged_in", "user": {"external_id": "app-user-77", "email": EMAIL}})
    inbox_apply()
    queue("queued", {"type": "page_viewed", "user": {"email": EMAIL}, "properties": {"path": "/erase-me"}})
    duplicate = contacts.contact_create(actor=system_actor, email="erasmus.old@example.com", first_name="Erasmus")
    contacts.contact_merge(survivor=contact, loser=duplicate, actor=system_actor)
    return {"contact": contact, "duplicate": duplicate, "deal": deal}


def _admin_id():
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="logger", defaults={"is_staff": True})
    return user.pk


PERSONAL_VALUES = (EMAIL, "erasmus.old@example.com", PHONE, "Erasmus", "Forgetme", "app-user-77", "hs-901")


def assert_nothing_left(contact_ids: list[int], values: tuple[str, ...] = PERSONAL_VALUES) -> None:
    """Walk every model: no row may point at an erased contact (foreign key or generic
    relation) or hold one of its personal `values` in any text or JSON column. Audit rows are
    walked too: they may name the contact id (they prove what happened), never its values."""
    Contact_ = apps.get_model("contacts", "Contact")
    problems = []
    for model in apps.get_models(include_auto_created=True):
        if model._meta.proxy or not model._meta.managed:
            continue
        rows = model._base_manager.all()
        for field in model._meta.concrete_fields:
            if isinstance(field, models.ForeignKey) and field.related_model is Contact_:
                left = rows.filter(**{f"{field.name}__in": contact_ids}).count()
                if left:
                    problems.append(f"{model._meta.label}.{field.name}: {left} row(s) point at the erased contact")
        for generic in model._meta.private_fields:
            if isinstance(generic, GenericForeignKey):
                contact_type = ContentType.objects.get_for_model(Contact_)
                left = rows.filter(**{generic.ct_field: contact_type, f"{generic.fk_field}__in": contact_ids}).count()
                if left:
                    problems.append(f"{model._meta.label}: {left} generic reference(s) to the erased contact")
        text_columns = [
            f.column
            for f in model._meta.concrete_fields
            if isinstance(f, models.CharField | models.TextField | models.JSONField | models.EmailField)
            or f.get_internal_type() == "ArrayField"
        ]
        if not text_columns:
            continue
        table = connection.ops.quote_name(model._meta.db_table)
        for column in text_columns:
            for value in values:
                with connection.cursor() as cursor:
                    cursor.execute(
                        f"SELECT count(*) FROM {table} WHERE {connection.ops.quote_name(column)}::text ILIKE %s",  # noqa: S608
                        [f"%{value}%"],
                    )
                    if cursor.fetchone()[0]:
                        problems.append(f"{model._meta.label}.{column} still holds {value!r}")
    assert not problems, "\n".join(problems)


def test_erase_removes_every_row_about_the_person_in_every_app(gdpr, person, django_capture_on_commit_callbacks):
    contact, duplicate = person["contact"], person["duplicate"]
    # A stored API response naming the person (an Idempotency-Key replay would disclose it).
    from crm_platform.idempotency import response_subjects

    stored = {"email": EMAIL}
    IdempotencyRecord.objects.create(
        owner="key:1",
        key="k1",
        request_hash="x",
        status="completed",
        response_body=stored,
        subjects=response_subjects(stored),
    )
    with django_capture_on_commit_callbacks():
        response = gdpr.post(f"/api/v1/contacts/{contact.pk}/erase")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "erased" and body["contact"] == contact.pk
    assert sorted(body["contacts"]) == sorted([contact.pk, duplicate.pk])
    assert body["counts"]["contacts.activity"] >= 1 and body["counts"]["leads.deal"] == 1
    assert body["counts"]["crm_platform.idempotencyrecord"] == 1 and not IdempotencyRecord.objects.exists()

    assert_nothing_left([contact.pk, duplicate.pk])
    # The inbox: the queued event is gone (it would bring the person back); the applied one stays
    # as its key's record, naming nobody.
    from integrations.models import InboundEvent

    assert list(InboundEvent.objects.values_list("key", "user_email", "user_external_id", "payload")) == [
        ("applied", "", "", None)
    ]
    # The deal stays, anonymised, for the pipeline figures.
    deal = person["deal"]
    deal.refresh_from_db()
    assert deal.contact_id is None and deal.name == "" and deal.amount == Decimal("500")
    # Hashes only, for both emails, the phone and the app user id.
    assert Suppression.objects.filter(lifted_at__isnull=True).count() == 4
    # The audit trail is intact and holds the erasure.
    assert AuditEvent.objects.filter(action="contact.erase", object_id=str(contact.pk)).exists()
    assert AuditEvent.objects.filter(action="contact.create", object_id=str(contact.pk)).exists()


def test_erase_takes_the_stored_responses_about_the_persons_records(gdpr, key_client, system_actor):
    """A note's or a ticket's stored response names the person by contact id only, so the text
    match on email and app user id left it, medical text and all, for a replay to hand out.
    Found by a review."""
    from contacts import services as contacts

    contact = contacts.contact_create(actor=system_actor, email="idem@example.com", external_id="u-idem")
    other = contacts.contact_create(actor=system_actor, email="other@example.com")
    writer = key_client(["contacts:write", "tickets:write", "phi:read"], name="writer")
    for key, person in (("note-1", contact), ("note-2", other)):
        body = {"contact": person.pk, "body": f"MARKER {key}: starts PrEP"}
        assert writer.post("/api/v1/notes", body, format="json", HTTP_IDEMPOTENCY_KEY=key).status_code == 201
    ticket = {"contact": contact.pk, "subject": "refill", "body": "MARKER: metformin"}
    assert writer.post("/api/v1/tickets", ticket, format="json", HTTP_IDEMPOTENCY_KEY="ticket-1").status_code == 201
    assert gdpr.post(f"/api/v1/contacts/{contact.pk}/erase").status_code == 200
    assert set(IdempotencyRecord.objects.values_list("key", flat=True)) == {"note-2"}  # another person's stays
    assert_nothing_left([contact.pk], values=("MARKER note-1", "MARKER: metformin"))


def test_erase_enqueues_provider_deletion_with_encrypted_identifiers(gdpr, person):
    contact = person["contact"]
    gdpr.post(f"/api/v1/contacts/{contact.pk}/erase")
    message = OutboxMessage.objects.get(topic="contact.deleted")
    assert message.object_id == str(contact.pk) and message.payload["id"] == contact.pk
    assert EMAIL not in json.dumps(message.payload)
    subject = erasure_subject(message.payload)
    assert EMAIL in subject["emails"] and PHONE in subject["phones"]
    assert subject["external_ids"] == ["app-user-77"]
    assert {"provider": "hubspot", "object_type": "contact", "external_id": "hs-901"} in subject["refs"]
    # The webhook event type of the topic, and what a webhook may receive of it: our id only.
    from compliance.guard import guard_payload
    from integrations.events import event_type_for

    assert event_type_for("contact.deleted", message.payload) == "contact.deleted"
    assert guard_payload("webhook", message.payload) == {"id": contact.pk}


def test_erasing_twice_answers_the_same(gdpr, person):
    contact = person["contact"]
    first = gdpr.post(f"/api/v1/contacts/{contact.pk}/erase")
    second = gdpr.post(f"/api/v1/contacts/{contact.pk}/erase")
    by_duplicate = gdpr.post(f"/api/v1/contacts/{person['duplicate'].pk}/erase")
    assert first.status_code == second.status_code == by_duplicate.status_code == 200
    assert first.json() == second.json() == by_duplicate.json()
    assert Erasure.objects.count() == 1
    assert OutboxMessage.objects.filter(topic="contact.deleted").count() == 1


def test_erase_unknown_contact_is_404(gdpr):
    response = gdpr.post("/api/v1/contacts/987654/erase")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_erase_needs_gdpr_scope(key_client):
    contact = ContactFactory()
    response = key_client(["contacts:write"]).post(f"/api/v1/contacts/{contact.pk}/erase")
    assert response.status_code == 403 and "gdpr:write" in response.json()["error"]["message"]
    assert Contact.objects.filter(pk=contact.pk).exists()


def test_contact_under_legal_hold_is_not_erased_409_with_reason(gdpr, system_actor):
    contact = ContactFactory(email=EMAIL)
    legal_hold_place(contact=contact, reason="Litigation hold, matter 2026-114", actor=system_actor)
    response = gdpr.post(f"/api/v1/contacts/{contact.pk}/erase")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "legal_hold" and "matter 2026-114" in error["message"]
    assert error["fields"] == {"legal_hold": ["Litigation hold, matter 2026-114"]}
    assert Contact.objects.filter(pk=contact.pk).exists() and not Suppression.objects.exists()


def test_hold_on_a_merged_away_duplicate_also_blocks(gdpr, system_actor):
    survivor, loser = ContactFactory(), ContactFactory()
    contacts.contact_merge(survivor=survivor, loser=loser, actor=system_actor)
    LegalHold.objects.create(contact=loser, reason="audit by regulator")
    assert gdpr.post(f"/api/v1/contacts/{survivor.pk}/erase").status_code == 409


def test_erasure_is_atomic_a_failing_handler_leaves_everything(gdpr, person):
    """A registered handler that fails rolls the whole erasure back (one transaction)."""
    from compliance.subjects import register_subject_data, subject_data
    from contacts import privacy

    def broken(*, contact_ids, actor):
        raise RuntimeError("provider refs store down")

    contact = person["contact"]
    register_subject_data("contacts.ExternalRef", contact_path="object_id", erase=broken, export=False)
    try:
        response = gdpr.post(f"/api/v1/contacts/{contact.pk}/erase")
        assert response.status_code == 500 and response.json()["error"]["code"] == "server_error"
    finally:
        register_subject_data(
            "contacts.ExternalRef",
            contact_path="object_id",
            erase=privacy.erase_external_refs,
            export=privacy.export_external_refs,
        )
    assert [d.erase for d in subject_data() if d.model_label == "contacts.externalref"] == [privacy.erase_external_refs]
    assert Contact.objects.filter(pk=contact.pk).exists()
    assert Activity.objects.filter(contact=contact).exists() and not Erasure.objects.exists()
    assert not Suppression.objects.exists()


def test_seed_002_delete_user_erases_by_app_user_id(gdpr, person):
    response = gdpr.delete("/api/crm/users/app-user-77")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success" and body["userId"] == "app-user-77"
    assert body["result"]["status"] == "erased" and body["result"]["contact"] == person["contact"].pk
    again = gdpr.delete("/api/crm/users/app-user-77")
    assert again.status_code == 200 and again.json() == body
    assert gdpr.delete("/api/crm/users/nobody-here").status_code == 404


def test_seed_002_delete_user_needs_gdpr_scope(key_client, person):
    assert key_client(["contacts:write"]).delete("/api/crm/users/app-user-77").status_code == 403


def test_admin_action_erases_after_confirmation(client, django_user_model, person):
    from django.contrib.auth.models import Group

    officer = django_user_model.objects.create_user(username="officer", password="a-long-test-password", is_staff=True)
    officer.groups.add(Group.objects.get(name="Compliance officer"))
    client.force_login(officer)
    contact = person["contact"]
    url = reverse("admin:contacts_contact_changelist")
    ask = client.post(url, {"action": "gdpr_erase", "_selected_action": [contact.pk]})
    assert ask.status_code == 200 and b"Erase contacts (GDPR)" in ask.content
    assert Contact.objects.filter(pk=contact.pk).exists()
    client.post(url, {"action": "gdpr_erase", "_selected_action": [contact.pk], "apply": "1", "confirm": "on"})
    assert not Contact.objects.filter(pk=contact.pk).exists()
    assert Erasure.objects.get().actor_id == str(officer.pk)


def test_admin_erase_action_is_not_offered_without_the_permission(client, django_user_model):
    from django.contrib.auth.models import Group

    seller = django_user_model.objects.create_user(username="seller", password="a-long-test-password", is_staff=True)
    seller.groups.add(Group.objects.get(name="Sales"))
    client.force_login(seller)
    page = client.get(reverse("admin:contacts_contact_changelist"))
    assert b"gdpr_erase" not in page.content


def test_a_big_timeline_is_erased_set_based(gdpr, system_actor, django_assert_max_num_queries):
    contact = ContactFactory(email=EMAIL)
    now = timezone.now()
    Activity.objects.bulk_create(
        [Activity(contact=contact, type="page_viewed", occurred_at=now - dt.timedelta(minutes=i)) for i in range(3000)]
    )
    # The query count does not grow with the timeline (one DELETE for all 3,000 rows).
    with django_assert_max_num_queries(120):
        response = gdpr.post(f"/api/v1/contacts/{contact.pk}/erase")
    assert response.json()["counts"]["contacts.activity"] == 3000
    assert not Activity.objects.filter(contact_id=contact.pk).exists()


def test_every_model_pointing_at_a_contact_is_registered_for_erasure():
    """A new model holding rows about a person must say how erasure and export treat them."""
    Contact_ = apps.get_model("contacts", "Contact")
    missing = [
        model._meta.label
        for model in apps.get_models()
        if model is not Contact_
        and any(
            isinstance(f, models.ForeignKey) and f.related_model is Contact_ and f.name != "merged_into"
            for f in model._meta.concrete_fields
        )
        and not is_registered(model._meta.label)
    ]
    assert missing == []


def test_erased_consent_history_goes_with_the_person(gdpr, person):
    gdpr.post(f"/api/v1/contacts/{person['contact'].pk}/erase")
    assert not Consent.objects.exists()


def test_the_walk_finds_what_is_left(person):
    """The all-models walk is not vacuous: before erasure it names what it finds."""
    with pytest.raises(AssertionError, match="point at the erased contact") as found:
        assert_nothing_left([person["contact"].pk])
    assert "still holds 'erase.me@example.com'" in str(found.value)


def test_admin_places_and_releases_a_legal_hold(admin_client, gdpr):
    contact = ContactFactory()
    added = admin_client.post("/admin/compliance/legalhold/add/", {"contact": contact.pk, "reason": "matter 7"})
    assert added.status_code == 302
    hold = LegalHold.objects.get(contact=contact)
    assert AuditEvent.objects.filter(action="legal_hold.place", object_id=str(hold.pk)).exists()
    assert gdpr.post(f"/api/v1/contacts/{contact.pk}/erase").status_code == 409
    admin_client.post("/admin/compliance/legalhold/", {"action": "release", "_selected_action": [hold.pk]})
    assert gdpr.post(f"/api/v1/contacts/{contact.pk}/erase").status_code == 200
    assert admin_client.get("/admin/compliance/erasure/").status_code == 200


# ----------------------------------------------------------------------------- provider ids of the person's objects


def _ref(obj, external_id: str) -> ExternalRef:
    return ExternalRef.objects.create(
        provider="p",
        object_type=obj._meta.model_name,
        external_id=external_id,
        content_type=ContentType.objects.get_for_model(obj),
        object_id=obj.pk,
    )


@pytest.fixture
def person_with_refs(system_actor):
    """A contact whose every object has its id at a provider, and someone else's ticket that has one."""
    contact = contacts.contact_create(actor=system_actor, email="refs@example.com", external_id="u-refs")
    order, _ = contacts.order_record(contact=contact, amount=Decimal("9"), external_id="ord-9", actor=system_actor)
    subscription, _ = contacts.subscription_start(
        contact=contact, plan="basic", external_id="sub-9", actor=system_actor
    )
    refs = {
        "hs-contact-1": contact,
        "zendesk-ticket-55": contacts.ticket_create(contact=contact, subject="s", body="b", actor=system_actor),
        "stripe-pi-77": order,
        "stripe-sub-78": subscription,
        "hs-note-79": contacts.note_create(contact=contact, body="n", actor=system_actor),
        "hs-event-80": contacts.activity_record(contact=contact, type="food_logged", actor=system_actor),
    }
    for external_id, obj in refs.items():
        _ref(obj, external_id)
    other = ContactFactory()
    _ref(contacts.ticket_create(contact=other, subject="s", actor=system_actor), "zendesk-ticket-56")
    return contact, refs


@pytest.fixture(params=["as registered", "refs first", "refs last"])
def handler_order(request, monkeypatch):
    """Erasure runs the registry's handlers in registration order: the refs must go whatever it is."""
    from compliance import subjects

    data = dict(subjects._data)
    refs = {"contacts.externalref": data.pop("contacts.externalref")}
    orders = {"as registered": subjects._data, "refs first": {**refs, **data}, "refs last": {**data, **refs}}
    monkeypatch.setattr(subjects, "_data", orders[request.param])
    return request.param


def test_erase_takes_the_provider_ids_of_every_object_of_the_person(gdpr, person_with_refs, handler_order):
    """Refs of tickets, orders, subscriptions, notes and timeline entries were looked up through
    objects already erased, so only the contact's own went. Found by a review."""
    contact, refs = person_with_refs
    response = gdpr.post(f"/api/v1/contacts/{contact.pk}/erase")
    assert response.status_code == 200, response.content
    assert list(ExternalRef.objects.values_list("external_id", flat=True)) == ["zendesk-ticket-56"]
    assert response.json()["counts"]["contacts.externalref"] == len(refs)
    assert_nothing_left([contact.pk], values=("refs@example.com", "u-refs", *refs))
    # Each provider still hears of every id it holds of the person.
    subject = erasure_subject(OutboxMessage.objects.get(topic="contact.deleted").payload)
    assert sorted(ref["external_id"] for ref in subject["refs"]) == sorted(refs)


def _export_document(client, contact, django_capture_on_commit_callbacks) -> dict:
    """export.json of the person's export, through the API and the job."""
    from compliance.tasks import export_build

    with django_capture_on_commit_callbacks():
        started = client.post(f"/api/v1/contacts/{contact.pk}/export")
    assert started.status_code == 202, started.content
    assert export_build.apply(args=[started.json()["id"]]).get() == "ready"
    download = client.get(client.get(f"/api/v1/exports/{started.json()['id']}").json()["download_url"])
    assert download.status_code == 200, download.content
    return json.loads(zipfile.ZipFile(io.BytesIO(download.content)).read("export.json"))


def test_the_export_holds_the_provider_ids_of_every_object_of_the_person(
    key_client, person_with_refs, django_capture_on_commit_callbacks
):
    contact, refs = person_with_refs
    document = _export_document(key_client(["gdpr:write", "phi:read"]), contact, django_capture_on_commit_callbacks)
    exported = {
        (r["object_type"], r["object_id"], r["external_id"]) for r in document["tables"]["contacts.externalref"]
    }
    assert exported == {(obj._meta.model_name, obj.pk, external_id) for external_id, obj in refs.items()}


# ----------------------------------------------------------------------------- other people's records

FRIEND = "Bob.Referred@Example.com"


def test_erasing_a_referred_friend_leaves_nothing_of_them_in_the_referrers_records(
    gdpr, key_client, system_actor, django_capture_on_commit_callbacks
):
    """referral_made names a friend by email. It was kept as sent on the referrer's timeline and
    in the referrer's export, where erasing the friend did not reach. Now only its keyed hash
    is kept, from the door on. Found by a review."""
    from integrations.inbox import inbox_apply

    referrer = contacts.contact_create(actor=system_actor, email="referrer@example.com", external_id="u-a")
    event = {
        "type": "referral_made",
        "user": {"external_id": "u-a"},
        "properties": {"referred_email": FRIEND, "channel": "sms"},
    }
    sent = key_client(["events:write"]).post("/api/v1/events", event, format="json", HTTP_IDEMPOTENCY_KEY="ref-1")
    assert sent.status_code == 202, sent.content
    inbox_apply()
    friend = contacts.contact_create(actor=system_actor, email=FRIEND, external_id="u-bob")
    assert gdpr.post(f"/api/v1/contacts/{friend.pk}/erase").status_code == 200

    assert_nothing_left([friend.pk], values=(FRIEND,))
    # The referral stays on the referrer's timeline, the friend kept as the suppression list keeps them.
    referral = Activity.objects.get(contact=referrer, type="referral_made")
    assert referral.properties == {"referred_email_digest": digest("email", FRIEND.lower()), "channel": "sms"}
    document = _export_document(key_client(["gdpr:write", "phi:read"]), referrer, django_capture_on_commit_callbacks)
    assert "referral_made" in json.dumps(document) and FRIEND.lower() not in json.dumps(document).lower()
