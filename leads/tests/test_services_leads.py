"""Lead capture, assignment, status history and contact merges, through the services."""

import pytest
from django.core.exceptions import ValidationError

from compliance.models import AuditEvent
from contacts.models import Activity, Contact
from contacts.services import contact_merge
from crm_platform.actor import Actor
from crm_platform.errors import ConflictError
from crm_platform.models import OutboxMessage
from leads.models import Deal, Lead, LeadAssignmentRule, LeadStatusChange
from leads.services import deal_create, lead_assign, lead_capture, lead_set_status
from tests.support import race

pytestmark = pytest.mark.django_db


def test_capture_creates_contact_lead_activity_lifecycle_and_outbox(system_actor):
    lead = lead_capture(
        actor=system_actor,
        source="assessment",
        email=" Ann@Example.COM ",
        first_name="Ann",
        assessment={"readiness_score": 75},
        persona="Strategic Contributor",
        utm_source="google",
    )
    contact = lead.contact
    assert (contact.email, contact.first_name, contact.source) == ("ann@example.com", "Ann", "assessment")
    assert contact.lifecycle_stage == "lead"  # lead_captured's lifecycle rule
    assert (lead.status, lead.source, lead.persona, lead.utm_source) == (
        "new",
        "assessment",
        "Strategic Contributor",
        "google",
    )
    assert lead.assessment == {"readiness_score": 75}
    assert Activity.objects.filter(contact=contact, type="lead_captured").count() == 1
    message = OutboxMessage.objects.get(topic="lead.captured")
    assert message.payload["email"] == "ann@example.com" and message.payload["reused"] is False
    assert "assessment" not in message.payload
    audit = AuditEvent.objects.get(action="lead.capture", object_id=str(lead.pk))
    assert audit.changes["source"]["new"] == "assessment"


def test_capture_of_the_same_person_reuses_the_open_lead(system_actor):
    first = lead_capture(actor=system_actor, source="website_form", email="bo@example.com", utm_campaign="spring")
    again = lead_capture(
        actor=system_actor,
        source="assessment",
        email="BO@example.com",
        assessment={"score": 3},
        persona="Busy Professional",
        utm_campaign="autumn",
    )
    assert again.pk == first.pk
    assert Lead.objects.count() == 1 and Contact.objects.count() == 1
    assert again.assessment == {"score": 3} and again.persona == "Busy Professional"
    assert again.utm_campaign == "spring"  # the first touch is kept
    assert Activity.objects.filter(type="lead_captured").count() == 2
    assert OutboxMessage.objects.filter(topic="lead.captured").latest("id").payload["reused"] is True


def test_capture_by_app_user_id_then_email_lands_on_one_contact(system_actor):
    first = lead_capture(actor=system_actor, source="api", external_id="u-1")
    second = lead_capture(actor=system_actor, source="api", external_id="u-1", email="cy@example.com")
    assert first.pk == second.pk
    assert Contact.objects.get().email == "cy@example.com"


def test_capture_after_the_lead_closed_opens_a_new_one(system_actor):
    first = lead_capture(actor=system_actor, source="website_form", email="di@example.com")
    lead_set_status(lead=first, status="unqualified", actor=system_actor)
    second = lead_capture(actor=system_actor, source="event", email="di@example.com")
    assert second.pk != first.pk and second.status == "new"


def test_capture_refuses_bad_input_without_writing(system_actor):
    with pytest.raises(ValidationError) as exc:
        lead_capture(actor=system_actor, source="carrier-pigeon", email="x@example.com", assessment=["no"])
    assert set(exc.value.message_dict) == {"source", "assessment"}
    with pytest.raises(ValidationError) as exc:
        lead_capture(actor=system_actor, source="api", email="not-an-email")
    assert "email" in exc.value.message_dict
    with pytest.raises(ValidationError):
        lead_capture(actor=system_actor, source="api")  # neither email nor app user id
    assert not Contact.objects.exists() and not Lead.objects.exists()


def test_capture_when_email_and_user_id_name_two_people_is_a_conflict(system_actor):
    lead_capture(actor=system_actor, source="api", email="ed@example.com")
    lead_capture(actor=system_actor, source="api", external_id="u-9")
    with pytest.raises(ConflictError):
        lead_capture(actor=system_actor, source="api", email="ed@example.com", external_id="u-9")
    assert Lead.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_captures_of_one_person_make_one_open_lead():
    results = race(
        4, lambda n: lead_capture(actor=Actor.system("race"), source="website_form", email="race@example.com").pk
    )
    assert len(set(results)) == 1
    assert Lead.objects.filter(status__in=Lead.OPEN_STATUSES).count() == 1
    assert Contact.objects.count() == 1


# ----------------------------------------------------------------------------- assignment


def test_round_robin_takes_turns_within_the_team_and_skips_full_people(system_actor, make_staff):
    LeadAssignmentRule.objects.all().delete()
    LeadAssignmentRule.objects.create(name="care team", kind="round_robin", team="care", priority=1)
    a = make_staff("a", team="care")
    b = make_staff("b", team="care")
    make_staff("other", team="field")  # another team
    make_staff("away", team="care", accepts_leads=False)
    full = make_staff("full", team="care", capacity=0)
    owners = [lead_capture(actor=system_actor, source="api", email=f"p{i}@example.com").owner for i in range(4)]
    assert owners == [a, b, a, b]
    assert full not in owners
    assert LeadAssignmentRule.objects.get().last_assigned == b


def test_capacity_counts_open_leads_only(system_actor, make_staff, no_assignment_rules):
    LeadAssignmentRule.objects.create(name="all", kind="round_robin")
    solo = make_staff("solo", capacity=1)
    first = lead_capture(actor=system_actor, source="api", email="one@example.com")
    assert first.owner == solo
    assert lead_capture(actor=system_actor, source="api", email="two@example.com").owner is None  # full
    lead_set_status(lead=first, status="unqualified", actor=system_actor)
    assert lead_capture(actor=system_actor, source="api", email="three@example.com").owner == solo


def test_region_rule_sends_leads_to_who_covers_the_region(system_actor, make_staff, no_assignment_rules):
    LeadAssignmentRule.objects.create(name="EU", kind="region", match_value="EU", priority=1)
    LeadAssignmentRule.objects.create(name="DE", kind="region", match_value="DE", priority=2)
    LeadAssignmentRule.objects.create(name="rest", kind="round_robin", priority=9)
    berlin = make_staff("berlin", regions=["DE"])
    europe = make_staff("europe", regions=["EU"])
    german = lead_capture(actor=system_actor, source="api", email="de@example.com", country="de")
    european = lead_capture(actor=system_actor, source="api", email="eu@example.com", region="EU", country="FR")
    american = lead_capture(actor=system_actor, source="api", email="us@example.com", country="US")
    assert german.owner == berlin
    assert european.owner == europe
    assert american.owner in (berlin, europe)  # the catch-all


def test_source_rule_and_explicit_owner(system_actor, make_staff, no_assignment_rules):
    LeadAssignmentRule.objects.create(name="referrals", kind="source", match_value="referral", priority=1)
    partner = make_staff("partner", sources=["referral"])
    boss = make_staff("boss")
    assert lead_capture(actor=system_actor, source="referral", email="r@example.com").owner == partner
    assert lead_capture(actor=system_actor, source="website_form", email="w@example.com").owner is None
    assert lead_capture(actor=system_actor, source="referral", email="x@example.com", owner=boss).owner == boss


def test_disabled_rule_assigns_nobody(system_actor, make_staff, no_assignment_rules):
    LeadAssignmentRule.objects.create(name="off", kind="round_robin", enabled=False)
    make_staff("idle")
    assert lead_capture(actor=system_actor, source="api", email="n@example.com").owner is None


def test_lead_assign_records_and_refuses_non_staff(system_actor, make_staff, django_user_model):
    lead = lead_capture(actor=system_actor, source="api", email="as@example.com")
    rep = make_staff("rep")
    lead = lead_assign(lead=lead, owner=rep, actor=system_actor)
    assert lead.owner == rep
    assert OutboxMessage.objects.filter(topic="lead.assigned", object_id=str(lead.pk)).exists()
    patient = django_user_model.objects.create_user(username="patient", password="x-long-password-1")
    with pytest.raises(ValidationError):
        lead_assign(lead=lead, owner=patient, actor=system_actor)


# ----------------------------------------------------------------------------- status


def test_status_change_keeps_history_and_publishes(system_actor):
    lead = lead_capture(actor=system_actor, source="api", email="st@example.com")
    lead_set_status(lead=lead, status="contacted", actor=system_actor, reason="called")
    lead_set_status(lead=lead, status="contacted", actor=system_actor)  # no change, no row
    lead = lead_set_status(lead=lead, status="qualified", actor=system_actor)
    history = list(LeadStatusChange.objects.filter(lead=lead).order_by("id").values_list("from_status", "to_status"))
    assert history == [("new", "contacted"), ("contacted", "qualified")]
    first = LeadStatusChange.objects.filter(lead=lead).earliest("id")
    assert (first.actor_kind, first.actor_id, first.reason) == ("system", "tests", "called")
    published = OutboxMessage.objects.filter(topic="lead.status_updated").order_by("id")
    assert [(m.payload["from"], m.payload["to"]) for m in published] == [
        ("new", "contacted"),
        ("contacted", "qualified"),
    ]


def test_converted_lead_stays_converted_and_bad_status_is_refused(system_actor):
    lead = lead_capture(actor=system_actor, source="api", email="cv@example.com")
    with pytest.raises(ValidationError) as exc:
        lead_set_status(lead=lead, status="won", actor=system_actor)
    assert "status" in exc.value.message_dict
    lead_set_status(lead=lead, status="converted", actor=system_actor)
    with pytest.raises(ValidationError):
        lead_set_status(lead=lead, status="new", actor=system_actor)


def test_reopening_while_another_lead_is_open_is_a_conflict(system_actor):
    old = lead_capture(actor=system_actor, source="api", email="ro@example.com")
    lead_set_status(lead=old, status="unqualified", actor=system_actor)
    current = lead_capture(actor=system_actor, source="api", email="ro@example.com")
    with pytest.raises(ConflictError) as exc:
        lead_set_status(lead=old, status="contacted", actor=system_actor)
    assert exc.value.fields == {"status": [f"lead {current.pk}"]}
    assert Lead.objects.get(pk=old.pk).status == "unqualified"


# ----------------------------------------------------------------------------- merge


def test_merge_moves_leads_and_deals_and_closes_the_losers_duplicate_open_lead(system_actor):
    kept = lead_capture(actor=system_actor, source="api", email="keep@example.com")
    gone = lead_capture(actor=system_actor, source="api", email="gone@example.com")
    deal = deal_create(actor=system_actor, name="Deal", contact=gone.contact)
    contact_merge(survivor=kept.contact, loser=gone.contact, actor=system_actor)
    gone.refresh_from_db()
    kept.refresh_from_db()
    assert gone.contact_id == kept.contact_id
    assert (kept.status, gone.status) == ("new", "unqualified")
    assert Deal.objects.get(pk=deal.pk).contact_id == kept.contact_id
    change = LeadStatusChange.objects.get(lead=gone)
    assert f"lead {kept.pk} stays open" in change.reason
