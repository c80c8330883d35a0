"""Deals: create, update, move along the pipeline, and seed 001's stage automations."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from compliance.models import AuditEvent
from contacts.models import LifecycleTransition, Subscription
from crm_platform.models import OutboxMessage
from leads.models import Deal, DealStageChange, Pipeline, Stage, StageAutomation
from leads.services import deal_create, deal_move_stage, deal_update, stage_automations_set_enabled

pytestmark = pytest.mark.django_db


def topics():
    return list(OutboxMessage.objects.order_by("id").values_list("topic", flat=True))


def test_default_pipeline_has_seed_001_stages_and_automations(pipeline):
    stages = list(pipeline.stages.order_by("order").values_list("key", "probability", "is_won", "is_lost"))
    assert stages == [
        ("appointment", Decimal("0.20"), False, False),
        ("qualification", Decimal("0.40"), False, False),
        ("proposal", Decimal("0.60"), False, False),
        ("negotiation", Decimal("0.80"), False, False),
        ("closedwon", Decimal("1.00"), True, False),
        ("closedlost", Decimal("0.00"), False, True),
    ]
    automations = set(StageAutomation.objects.values_list("stage__key", "action", "enabled"))
    assert automations == {
        ("closedwon", "contact_active_customer", True),
        ("closedwon", "create_subscription", True),
        ("closedwon", "request_onboarding", True),
        ("closedlost", "feedback_survey", True),
        ("negotiation", "notify_manager", True),
    }


def test_create_defaults_to_first_stage_of_default_pipeline_and_records_history(system_actor, make_contact):
    contact = make_contact("deal@example.com")
    deal = deal_create(actor=system_actor, name=" Ann - Premium ", amount="120.50", contact=contact, currency="eur")
    assert (deal.name, deal.stage.key, deal.amount, deal.currency) == (
        "Ann - Premium",
        "appointment",
        Decimal("120.50"),
        "EUR",
    )
    change = DealStageChange.objects.get(deal=deal)
    assert (change.from_stage, change.to_stage.key, change.days_in_previous_stage) == (None, "appointment", None)
    assert "deal.created" in topics()
    assert AuditEvent.objects.filter(action="deal.create", object_id=str(deal.pk)).exists()


def test_create_refuses_bad_fields_and_a_stage_of_another_pipeline(system_actor, stages):
    with pytest.raises(ValidationError) as exc:
        deal_create(actor=system_actor, name="", amount="-3", currency="dollars", close_date="tomorrow")
    assert set(exc.value.message_dict) == {"name", "amount", "currency", "close_date"}
    other = Pipeline.objects.create(name="Partners")
    with pytest.raises(ValidationError) as exc:
        deal_create(actor=system_actor, name="x", pipeline=other, stage=stages["proposal"])
    assert "stage" in exc.value.message_dict
    assert not Deal.objects.exists()


def test_update_changes_fields_but_not_the_stage(system_actor, make_staff):
    deal = deal_create(actor=system_actor, name="Old", amount=10)
    rep = make_staff("rep")
    deal = deal_update(deal=deal, actor=system_actor, name="New", amount="99.99", owner=rep)
    assert (deal.name, deal.amount, deal.owner) == ("New", Decimal("99.99"), rep)
    message = OutboxMessage.objects.filter(topic="deal.updated").get()
    assert message.payload["changed"] == ["amount", "name", "owner"]
    with pytest.raises(ValidationError) as exc:
        deal_update(deal=deal, actor=system_actor, stage=1)
    assert "stage" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        deal_update(deal=deal, actor=system_actor, probability=1)
    assert "probability" in exc.value.message_dict


def test_move_records_days_in_previous_stage(system_actor, stages):
    deal = deal_create(actor=system_actor, name="Slow", amount=1)
    Deal.objects.filter(pk=deal.pk).update(stage_entered_at=timezone.now() - dt.timedelta(days=3))
    deal = deal_move_stage(deal=deal, stage=stages["qualification"], actor=system_actor)
    change = DealStageChange.objects.filter(deal=deal).latest("id")
    assert (change.from_stage.key, change.to_stage.key) == ("appointment", "qualification")
    assert change.days_in_previous_stage == pytest.approx(3, abs=0.01)
    assert deal.stage_entered_at > timezone.now() - dt.timedelta(minutes=1)
    message = OutboxMessage.objects.get(topic="deal.stage_changed")
    assert (message.payload["from_stage"], message.payload["stage"]) == ("appointment", "qualification")


def test_move_to_the_same_stage_does_nothing(system_actor, stages):
    deal = deal_create(actor=system_actor, name="Same", amount=1)
    deal_move_stage(deal=deal, stage=stages["appointment"], actor=system_actor)
    assert DealStageChange.objects.filter(deal=deal).count() == 1


def test_move_to_a_stage_of_another_pipeline_is_refused(system_actor):
    deal = deal_create(actor=system_actor, name="Cross", amount=1)
    other = Pipeline.objects.create(name="Partners")
    foreign = Stage.objects.create(pipeline=other, key="intro", name="Intro", order=0)
    with pytest.raises(ValidationError) as exc:
        deal_move_stage(deal=deal, stage=foreign, actor=system_actor)
    assert "stage" in exc.value.message_dict
    assert Deal.objects.get(pk=deal.pk).stage.key == "appointment"


def test_closed_won_with_a_plan_makes_the_contact_a_subscriber_and_requests_onboarding(
    system_actor, stages, make_contact
):
    contact = make_contact("won@example.com")
    deal = deal_create(actor=system_actor, name="Won", amount="79", contact=contact, plan="Foundation monthly")
    deal_move_stage(deal=deal, stage=stages["closedwon"], actor=system_actor)
    contact.refresh_from_db()
    assert contact.lifecycle_stage == "subscriber"
    moves = list(
        LifecycleTransition.objects.filter(contact=contact).order_by("id").values_list("from_stage", "to_stage")
    )
    assert moves == [("visitor", "active_customer"), ("active_customer", "subscriber")]
    subscription = Subscription.objects.get(contact=contact)
    assert (subscription.plan, subscription.amount, subscription.external_id) == (
        "Foundation monthly",
        Decimal("79.00"),
        f"deal-{deal.pk}",
    )
    onboarding = OutboxMessage.objects.get(topic="onboarding.requested")
    assert onboarding.payload["deal"] == deal.pk and onboarding.payload["contact"] == contact.pk
    audit = AuditEvent.objects.get(action="deal.move_stage", object_id=str(deal.pk))
    assert audit.changes["automations"]["new"] == [
        "contact_active_customer",
        "create_subscription",
        "request_onboarding",
    ]


def test_closed_won_without_a_plan_makes_an_active_customer_and_no_subscription(system_actor, stages, make_contact):
    contact = make_contact("noplan@example.com")
    deal = deal_create(actor=system_actor, name="One-off", amount=10, contact=contact)
    deal_move_stage(deal=deal, stage=stages["closedwon"], actor=system_actor)
    contact.refresh_from_db()
    assert contact.lifecycle_stage == "active_customer"
    assert not Subscription.objects.exists()


def test_winning_again_after_reopening_starts_no_second_subscription(system_actor, stages, make_contact):
    contact = make_contact("again@example.com")
    deal = deal_create(actor=system_actor, name="Again", amount=10, contact=contact, plan="Premium")
    deal_move_stage(deal=deal, stage=stages["closedwon"], actor=system_actor)
    deal_move_stage(deal=deal, stage=stages["negotiation"], actor=system_actor)
    deal_move_stage(deal=deal, stage=stages["closedwon"], actor=system_actor)
    assert Subscription.objects.filter(contact=contact).count() == 1


def test_switched_off_automations_do_not_fire(system_actor, stages, make_contact):
    contact = make_contact("off@example.com")
    won = StageAutomation.objects.filter(stage=stages["closedwon"])
    assert stage_automations_set_enabled(automations=won, enabled=False, actor=system_actor) == 3
    deal = deal_create(actor=system_actor, name="Quiet", amount=10, contact=contact, plan="Premium")
    deal_move_stage(deal=deal, stage=stages["closedwon"], actor=system_actor)
    contact.refresh_from_db()
    assert contact.lifecycle_stage == "visitor"
    assert not Subscription.objects.exists()
    assert "onboarding.requested" not in topics()
    assert AuditEvent.objects.filter(action="stageautomation.update").count() == 3


def test_closed_lost_requests_a_feedback_survey(system_actor, stages, make_contact):
    contact = make_contact("lost@example.com")
    deal = deal_create(actor=system_actor, name="Lost", amount=10, contact=contact)
    deal_move_stage(deal=deal, stage=stages["closedlost"], actor=system_actor)
    survey = OutboxMessage.objects.get(topic="feedback_survey.requested")
    assert (survey.payload["deal"], survey.payload["contact"], survey.payload["stage"]) == (
        deal.pk,
        contact.pk,
        "closedlost",
    )


def test_closed_lost_survey_switched_off(system_actor, stages, make_contact):
    StageAutomation.objects.filter(stage=stages["closedlost"]).update(enabled=False)
    deal = deal_create(actor=system_actor, name="Lost", amount=10, contact=make_contact("q@example.com"))
    deal_move_stage(deal=deal, stage=stages["closedlost"], actor=system_actor)
    assert "feedback_survey.requested" not in topics()


def test_negotiation_notifies_the_owners_manager(system_actor, stages, make_staff):
    manager = make_staff("mgr", first_name="Morgan", last_name="Lee", email="morgan@staff.example")
    rep = make_staff("rep", manager=manager)
    deal = deal_create(actor=system_actor, name="Big", amount="5000", owner=rep)
    deal_move_stage(deal=deal, stage=stages["negotiation"], actor=system_actor)
    note = OutboxMessage.objects.get(topic="deal.manager_notification")
    assert note.payload["manager"] == manager.pk
    assert (note.payload["manager_name"], note.payload["manager_email"]) == ("Morgan Lee", "morgan@staff.example")
    assert (note.payload["owner"], note.payload["stage"], note.payload["amount"]) == (rep.pk, "negotiation", "5000.00")


def test_negotiation_without_a_manager_or_switched_off_notifies_nobody(system_actor, stages, make_staff):
    lone = make_staff("lone")
    deal = deal_create(actor=system_actor, name="Solo", amount=1, owner=lone)
    deal_move_stage(deal=deal, stage=stages["negotiation"], actor=system_actor)
    manager = make_staff("mgr")
    rep = make_staff("rep", manager=manager)
    StageAutomation.objects.filter(action="notify_manager").update(enabled=False)
    other = deal_create(actor=system_actor, name="Muted", amount=1, owner=rep)
    deal_move_stage(deal=other, stage=stages["negotiation"], actor=system_actor)
    assert "deal.manager_notification" not in topics()


def test_a_failing_automation_undoes_the_move(system_actor, stages, make_contact, monkeypatch):
    from leads.services import deals as deal_services

    def boom(**kwargs):
        raise ValidationError({"plan": ["provider said no"]})

    monkeypatch.setitem(deal_services._ACTIONS, StageAutomation.Action.CREATE_SUBSCRIPTION, boom)
    contact = make_contact("undo@example.com")
    deal = deal_create(actor=system_actor, name="Undo", amount=1, contact=contact, plan="Premium")
    with pytest.raises(ValidationError):
        deal_move_stage(deal=deal, stage=stages["closedwon"], actor=system_actor)
    assert Deal.objects.get(pk=deal.pk).stage.key == "appointment"
    contact.refresh_from_db()
    assert contact.lifecycle_stage == "visitor"
    assert DealStageChange.objects.filter(deal=deal).count() == 1
