import pytest
from django.contrib.auth import get_user_model

from contacts.services import contact_upsert
from crm_platform.models import StaffProfile
from leads.models import LeadAssignmentRule, Pipeline, Stage


@pytest.fixture
def make_staff(db):
    """make_staff(username, **profile) -> a staff user with a StaffProfile (team, regions,
    sources, capacity, accepts_leads, manager)."""

    def make(username, *, email=None, first_name="", last_name="", **profile):
        user = get_user_model().objects.create_user(
            username=username,
            email=email or f"{username}@staff.example",
            first_name=first_name,
            last_name=last_name,
            password="a-long-test-password",
            is_staff=True,
        )
        StaffProfile.objects.create(user=user, **profile)
        return user

    return make


@pytest.fixture
def no_assignment_rules(db):
    """Start from no rules (the migration's catch-all round robin is removed)."""
    LeadAssignmentRule.objects.all().delete()


@pytest.fixture
def pipeline(db):
    return Pipeline.objects.get(is_default=True)


@pytest.fixture
def stages(pipeline):
    return {stage.key: stage for stage in pipeline.stages.all()}


@pytest.fixture
def euro_pipeline(db):
    """A second pipeline, reported in euros, with one open stage (`first`)."""
    europe = Pipeline.objects.create(name="Europe", currency="EUR")
    Stage.objects.create(pipeline=europe, key="first", name="First", order=1, probability="0.1")
    return europe


@pytest.fixture
def make_contact(db, system_actor):
    def make(email, **fields):
        contact, _ = contact_upsert(actor=system_actor, email=email, **fields)
        return contact

    return make
