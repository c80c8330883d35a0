from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from compliance.models import AuditEvent
from contacts import services
from contacts.lifecycle import Stage
from contacts.models import Activity, Contact, CustomFieldDefinition, LifecycleRule, LifecycleTransition, Note, Order
from contacts.tests.factories import ContactFactory
from crm_platform.errors import ConflictError
from crm_platform.models import OutboxMessage
from tests.support import race

pytestmark = pytest.mark.django_db


def test_create_normalizes_email_and_phone(system_actor):
    contact = services.contact_create(
        actor=system_actor, email="  Ann.Lee@Example.COM ", phone="(415) 555-0123", country="us"
    )
    assert contact.email == "ann.lee@example.com"
    assert contact.phone == "+14155550123" and contact.country == "US"
    assert AuditEvent.objects.filter(action="contact.create", object_id=str(contact.pk)).exists()
    assert OutboxMessage.objects.filter(topic="contact.created", object_id=str(contact.pk)).exists()


def test_duplicate_email_in_any_case_is_a_conflict_naming_the_contact(system_actor):
    first = services.contact_create(actor=system_actor, email="ann@example.com")
    with pytest.raises(ConflictError) as exc:
        services.contact_create(actor=system_actor, email="ANN@example.com")
    assert exc.value.fields == {"email": [f"contact {first.pk}"]}
    assert Contact.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b.co", "phone": "12"}, "phone"),
        ({"email": "a@b.co", "churn_risk": 1.5}, "churn_risk"),
        ({"email": "a@b.co", "engagement_tier": "diamond"}, "engagement_tier"),
        ({"email": "a@b.co", "lifecycle_stage": "royalty"}, "lifecycle_stage"),
        ({"email": "a@b.co", "lead_score": 5}, "lead_score"),
        ({}, "email"),
    ],
)
def test_bad_fields_are_refused_before_anything_is_written(system_actor, fields, bad):
    with pytest.raises(ValidationError) as exc:
        services.contact_create(actor=system_actor, **fields)
    assert bad in exc.value.message_dict
    assert not Contact.objects.exists() and not AuditEvent.objects.exists()


def test_email_and_app_id_of_two_people_is_a_conflict_naming_both(system_actor):
    by_email = services.contact_create(actor=system_actor, email="a@example.com")
    by_app = services.contact_create(actor=system_actor, external_id="u-2")
    with pytest.raises(ConflictError) as exc:
        services.contact_upsert(actor=system_actor, email="a@example.com", external_id="u-2", first_name="X")
    assert exc.value.fields == {"email": [f"contact {by_email.pk}"], "external_id": [f"contact {by_app.pk}"]}
    assert Contact.objects.get(pk=by_email.pk).first_name == ""


def test_upsert_creates_then_updates_and_fills_identity(system_actor):
    contact, created = services.contact_upsert(actor=system_actor, external_id="u-1", first_name="Ann")
    assert created
    again, created = services.contact_upsert(
        actor=system_actor, external_id="u-1", email="ann@example.com", last_name="Lee"
    )
    assert not created and again.pk == contact.pk
    assert (again.email, again.first_name, again.last_name) == ("ann@example.com", "Ann", "Lee")


def test_concurrent_upserts_of_one_email_make_one_contact(transactional_db, system_actor):
    """Eight threads, each with its own database connection, race to upsert the same person."""
    race(8, lambda n: services.contact_upsert(actor=system_actor, email="Race@Example.com", first_name=f"T{n}"))
    assert Contact.objects.filter(email="race@example.com").count() == 1
    assert AuditEvent.objects.filter(action="contact.create").count() == 1


def test_update_refuses_unknown_fields_and_taken_email(system_actor):
    a = ContactFactory(email="a@example.com")
    ContactFactory(email="b@example.com")
    with pytest.raises(ValidationError) as exc:
        services.contact_update(contact=a, actor=system_actor, lead_score=99, favourite_colour="blue")
    assert set(exc.value.message_dict) == {"lead_score", "favourite_colour"}
    with pytest.raises(ConflictError):
        services.contact_update(contact=a, actor=system_actor, email="B@example.com")


def test_update_audits_names_not_personal_values(system_actor):
    contact = ContactFactory(email="a@example.com", first_name="Ann")
    services.contact_update(contact=contact, actor=system_actor, first_name="Anna", engagement_tier="gold")
    event = AuditEvent.objects.get(action="contact.update")
    assert event.changes == {"first_name": {"changed": True}, "engagement_tier": {"old": "bronze", "new": "gold"}}


def test_custom_properties_follow_their_definitions(system_actor):
    CustomFieldDefinition.objects.create(key="plan_interest", label="Plan", type="choice", choices=["basic", "pro"])
    CustomFieldDefinition.objects.create(key="visits", label="Visits", type="number")
    contact = services.contact_create(
        actor=system_actor, email="a@example.com", properties={"plan_interest": "pro", "visits": 3}
    )
    assert contact.properties == {"plan_interest": "pro", "visits": 3}
    with pytest.raises(ValidationError) as exc:
        services.contact_update(contact=contact, actor=system_actor, properties={"visits": "many", "nope": 1})
    assert len(exc.value.message_dict["properties"]) == 2


def test_lifecycle_moves_along_the_table_and_records_history(system_actor):
    contact = ContactFactory()
    services.lifecycle_transition(contact=contact, to_stage=Stage.LEAD, reason="captured", actor=system_actor)
    with pytest.raises(ValidationError) as exc:
        services.lifecycle_transition(contact=contact, to_stage=Stage.WON_BACK, reason="x", actor=system_actor)
    assert "cannot move from Lead to Won-Back" in exc.value.message_dict["lifecycle_stage"][0]
    history = LifecycleTransition.objects.get(contact=contact)
    assert (history.from_stage, history.to_stage, history.reason, history.actor_kind) == (
        "visitor",
        "lead",
        "captured",
        "system",
    )


def test_orders_move_the_contact_by_the_rules(system_actor):
    contact = ContactFactory(lifecycle_stage=Stage.PATIENT)
    services.order_record(contact=contact, amount=Decimal("40"), actor=system_actor)
    contact.refresh_from_db()
    assert contact.lifecycle_stage == Stage.ACTIVE_CUSTOMER and contact.is_paid
    services.order_record(contact=contact, amount=Decimal("40"), actor=system_actor)
    contact.refresh_from_db()
    assert contact.lifecycle_stage == Stage.SUBSCRIBER


def test_a_rule_staff_switched_off_does_not_move_anyone(system_actor):
    LifecycleRule.objects.filter(event_type="order_placed").update(enabled=False)
    contact = ContactFactory(lifecycle_stage=Stage.PATIENT)
    services.order_record(contact=contact, amount=Decimal("40"), actor=system_actor)
    contact.refresh_from_db()
    assert contact.lifecycle_stage == Stage.PATIENT


def test_activity_after_churned_wins_the_contact_back(system_actor):
    contact = ContactFactory(lifecycle_stage=Stage.CHURNED)
    services.activity_record(contact=contact, type="user_logged_in", actor=system_actor)
    contact.refresh_from_db()
    assert contact.lifecycle_stage == Stage.WON_BACK and contact.last_active_at is not None


def test_order_with_the_same_external_id_is_recorded_once(system_actor):
    contact = ContactFactory()
    first, created = services.order_record(contact=contact, amount=10, external_id="o-1", actor=system_actor)
    again, created_again = services.order_record(contact=contact, amount=10, external_id="o-1", actor=system_actor)
    assert created and not created_again and first.pk == again.pk
    assert Order.objects.count() == 1


def test_merge_moves_everything_and_archives_the_loser(system_actor):
    survivor = ContactFactory(email="keep@example.com", phone="", tags=["vip"])
    loser = ContactFactory(email="old@example.com", phone="+14155550123", tags=["trial"])
    services.activity_record(contact=loser, type="page_viewed", actor=system_actor, apply_lifecycle=False)
    services.note_create(contact=loser, body="called", actor=system_actor)
    services.order_record(contact=loser, amount=5, actor=system_actor)
    merged = services.contact_merge(survivor=survivor, loser=loser, actor=system_actor)
    loser.refresh_from_db()
    assert loser.is_archived and loser.merged_into_id == survivor.pk
    assert Activity.objects.filter(contact=survivor).count() >= 1 and Note.objects.filter(contact=survivor).count() == 1
    assert Order.objects.filter(contact=survivor).count() == 1
    assert merged.phone == "+14155550123" and merged.tags == ["trial", "vip"] and merged.is_paid
    assert AuditEvent.objects.filter(action="contact.merge", object_id=str(survivor.pk)).exists()
    # The loser's email now leads to the survivor.
    found, created = services.contact_upsert(actor=system_actor, email="old@example.com", first_name="Z")
    assert not created and found.pk == survivor.pk


def test_merge_into_itself_is_refused(system_actor):
    contact = ContactFactory()
    with pytest.raises(ValidationError):
        services.contact_merge(survivor=contact, loser=contact, actor=system_actor)


def test_bulk_score_and_clv_writes_change_only_what_differs(system_actor):
    a, b = ContactFactory(), ContactFactory()
    rows = [(a.pk, 40, [{"rule": "email", "points": 40}]), (b.pk, 0, [])]
    assert services.contacts_set_scores(rows=rows, actor=system_actor) == 1
    assert services.contacts_set_scores(rows=rows, actor=system_actor) == 0
    a.refresh_from_db()
    assert a.lead_score == 40 and a.score_explanation == [{"rule": "email", "points": 40}]
    assert services.contacts_set_clv(rows=[(a.pk, Decimal("123.456"))], actor=system_actor) == 1
    a.refresh_from_db()
    assert a.clv == Decimal("123.46")


def test_lifecycle_sweep_follows_the_thresholds_staff_set(system_actor):
    from contacts.models import LifecycleSettings
    from contacts.tasks import lifecycle_sweep

    now = timezone.now()
    risky = ContactFactory(lifecycle_stage=Stage.SUBSCRIBER, churn_risk=0.8, last_active_at=now)
    calm = ContactFactory(lifecycle_stage=Stage.SUBSCRIBER, churn_risk=0.5, last_active_at=now)
    gone = ContactFactory(lifecycle_stage=Stage.ACTIVE_CUSTOMER, last_active_at=now - timedelta(days=120))
    visitor = ContactFactory(lifecycle_stage=Stage.VISITOR, last_active_at=now - timedelta(days=400))
    assert lifecycle_sweep.apply().get() == {"churned": 1, "at_risk": 1}
    for contact, stage in ((risky, "at_risk"), (calm, "subscriber"), (gone, "churned"), (visitor, "visitor")):
        contact.refresh_from_db()
        assert contact.lifecycle_stage == stage
    LifecycleSettings.objects.update(at_risk_churn_risk=0.4)
    assert lifecycle_sweep.apply().get() == {"churned": 0, "at_risk": 1}


@pytest.mark.parametrize("move", ["lifecycle", "archive"])
def test_a_move_or_archive_does_not_wait_for_rows_being_written_about_the_contact(transactional_db, system_actor, move):
    """Writes that change no key take FOR NO KEY UPDATE, as the inbound timeline batch does: a
    transaction inserting an activity for the contact (which holds FOR KEY SHARE on its row
    until it commits) does not block them, and a batch holding the row cannot deadlock with
    them by upgrading its lock."""
    from django.db import connection

    from tests.support import other_connection

    contact = ContactFactory(lifecycle_stage=Stage.VISITOR)
    with other_connection() as other:  # an open transaction writing the contact's timeline
        other.execute("SET CONSTRAINTS ALL IMMEDIATE")  # its foreign key checked now, as at a commit
        other.execute(
            "INSERT INTO contacts_activity (contact_id, type, occurred_at, source, properties, created_at) "
            "VALUES (%s, 'page_viewed', now(), 'app', '{}', now())",
            [contact.pk],
        )
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        try:
            if move == "lifecycle":
                services.lifecycle_transition(contact=contact, to_stage=Stage.LEAD, reason="test", actor=system_actor)
            else:
                services.contact_archive(contact=contact, actor=system_actor)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
        other.rollback()
    contact.refresh_from_db()
    assert contact.lifecycle_stage == Stage.LEAD if move == "lifecycle" else contact.is_archived
