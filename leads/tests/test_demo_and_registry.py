"""Demo data loads once; personal fields are registered and kept out of audit rows."""

import io
import random

import pytest

from compliance.models import AuditEvent
from compliance.registry import PHI, personal_fields
from contacts.models import Contact, Order
from crm_platform.actor import Actor
from leads import demo
from leads.models import Deal, DealStageChange, Lead
from leads.services import lead_capture

pytestmark = pytest.mark.django_db


def test_demo_seed_is_real_and_idempotent():
    actor = Actor.system("tests demo")
    summary = demo.seed(actor=actor, rng=random.Random(7), stdout=io.StringIO())
    assert summary.startswith(f"{demo.PEOPLE} leads")
    assert Lead.objects.count() == demo.PEOPLE
    assert Deal.objects.count() > 50
    assert DealStageChange.objects.filter(to_stage__key="closedwon").exists()
    assert Order.objects.exists()
    stages = set(Contact.objects.values_list("lifecycle_stage", flat=True))
    assert {"lead", "prospect", "patient", "active_customer", "subscriber"} <= stages
    assert Contact.objects.filter(lead_score__gt=0).exists() and Contact.objects.filter(clv__gt=0).exists()
    assert demo.seed(actor=actor, rng=random.Random(7), stdout=io.StringIO()) == "demo leads already loaded"
    assert Lead.objects.count() == demo.PEOPLE


def test_personal_fields_are_registered():
    assert personal_fields("leads.Lead")["assessment"] == PHI
    assert personal_fields("leads.Lead")["persona"] == PHI
    assert personal_fields("leads.Deal")["plan"] == PHI
    assert "name" in personal_fields("leads.Deal")
    assert "reason" in personal_fields("leads.LeadStatusChange")


def test_audit_rows_record_that_medical_fields_changed_never_their_values(system_actor):
    lead = lead_capture(actor=system_actor, source="assessment", email="a@example.com", persona="First")
    lead_capture(actor=system_actor, source="assessment", email="a@example.com", persona="Second", assessment={"x": 1})
    audit = AuditEvent.objects.filter(action="lead.capture", object_id=str(lead.pk)).latest("id")
    assert audit.changes["persona"] == {"changed": True}
    assert audit.changes["assessment"] == {"changed": True}
    assert "Second" not in str(audit.changes)
