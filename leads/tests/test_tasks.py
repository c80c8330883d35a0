"""The leads jobs run through Celery's task machinery and are scheduled on the bulk queue."""

import pytest

from contacts.models import Contact
from contacts.services import order_record
from crm_platform.schedules import SCHEDULE
from leads.tasks import clv_recompute_all, lead_score_recompute, lead_scores_recompute_all

pytestmark = pytest.mark.django_db


def test_scores_task_scores_everyone_and_is_safe_to_run_twice(make_contact):
    make_contact("t1@example.com")
    make_contact("t2@example.com", phone="+16502530000")
    assert lead_scores_recompute_all.apply().get() == 2
    assert sorted(Contact.objects.values_list("lead_score", flat=True)) == [5, 10]
    assert lead_scores_recompute_all.apply().get() == 0


def test_one_contact_task(make_contact):
    contact = make_contact("one@example.com")
    assert lead_score_recompute.apply(args=[contact.pk]).get() == 5
    assert lead_score_recompute.apply(args=[contact.pk + 1000]).get() is None


def test_clv_task(make_contact, system_actor):
    contact = make_contact("buyer@example.com")
    order_record(contact=contact, amount="10", actor=system_actor)
    assert clv_recompute_all.apply().get() == 1
    contact.refresh_from_db()
    assert contact.clv > 0


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("leads.lead_scores_recompute_all", "leads.tasks.lead_scores_recompute_all"),
        ("leads.clv_recompute_all", "leads.tasks.clv_recompute_all"),
    ],
)
def test_jobs_are_scheduled_on_the_bulk_queue_with_an_expiry(name, task):
    entry = SCHEDULE[name]
    assert (entry["task"], entry["queue"]) == (task, "bulk")
    assert 0 < entry["expires"]


def test_scores_hourly_and_clv_nightly():
    assert set(SCHEDULE["leads.lead_scores_recompute_all"]["crontab"]) == {"minute"}
    assert set(SCHEDULE["leads.clv_recompute_all"]["crontab"]) == {"minute", "hour"}
