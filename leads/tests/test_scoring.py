"""Lead scores (declared rules, decay, explanation) and CLV, computed set-based."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from compliance.models import AuditEvent
from contacts.models import Contact
from contacts.services import activity_record, order_record
from leads.models import ClvSettings, ScoringRule
from leads.selectors import profile_rule_q
from leads.services import clv_recompute, lead_score_recompute, lead_scores_recompute

pytestmark = pytest.mark.django_db

PHONE = "+16502530000"


@pytest.fixture
def rules(db):
    ScoringRule.objects.all().delete()
    return {
        "email": ScoringRule.objects.create(
            name="Email present", kind="profile", field="email", operator="present", points=5
        ),
        "phone": ScoringRule.objects.create(
            name="Phone present", kind="profile", field="phone", operator="present", points=5
        ),
        "assessment": ScoringRule.objects.create(
            name="Assessment completed",
            kind="event",
            event_type="assessment_completed",
            points=20,
            half_life_days=30,
            max_points=20,
        ),
        "views": ScoringRule.objects.create(
            name="Page viewed", kind="event", event_type="page_viewed", points=1, half_life_days=7, max_points=10
        ),
    }


def record(contact, actor, type, *, days_ago=0.0, times=1):
    at = timezone.now() - dt.timedelta(days=days_ago)
    for _ in range(times):
        activity_record(contact=contact, type=type, actor=actor, occurred_at=at)


def test_score_sums_profile_and_decayed_event_points_and_explains_them(rules, make_contact, system_actor):
    contact = make_contact("score@example.com", phone=PHONE)
    record(contact, system_actor, "assessment_completed", days_ago=30)  # one half-life: 20 -> 10
    record(contact, system_actor, "page_viewed", times=3)
    score, explanation = lead_score_recompute(contact=contact, actor=system_actor)
    assert score == 23
    assert explanation == [
        {"rule": "Assessment completed", "points": 10.0},
        {"rule": "Email present", "points": 5.0},
        {"rule": "Phone present", "points": 5.0},
        {"rule": "Page viewed", "points": 3.0},
    ]
    contact.refresh_from_db()
    assert (contact.lead_score, contact.score_explanation) == (23, explanation)


def test_event_points_halve_every_half_life_and_stop_after_eight(rules, make_contact, system_actor):
    contact = make_contact("decay@example.com")
    rules["email"].delete()
    record(contact, system_actor, "assessment_completed", days_ago=60)  # two half-lives: 5
    record(contact, system_actor, "page_viewed", days_ago=57)  # past eight half-lives: not read
    _, explanation = lead_score_recompute(contact=contact, actor=system_actor)
    assert explanation == [{"rule": "Assessment completed", "points": 5.0}]


def test_a_rule_gives_at_most_its_max_and_the_score_at_most_100(rules, make_contact, system_actor):
    contact = make_contact("busy@example.com", phone=PHONE)
    record(contact, system_actor, "page_viewed", times=15)
    _, explanation = lead_score_recompute(contact=contact, actor=system_actor)
    assert {"rule": "Page viewed", "points": 10.0} in explanation
    ScoringRule.objects.create(name="Huge", kind="event", event_type="page_viewed", points=100)
    score, _ = lead_score_recompute(contact=contact, actor=system_actor)
    assert score == 100


def test_negative_rules_cannot_take_the_score_below_zero(rules, make_contact, system_actor):
    ScoringRule.objects.create(name="Unsubscribed", kind="event", event_type="unsubscribed", points=-50)
    contact = make_contact("neg@example.com")
    record(contact, system_actor, "unsubscribed")
    score, explanation = lead_score_recompute(contact=contact, actor=system_actor)
    assert score == 0
    assert {"rule": "Unsubscribed", "points": -50.0} in explanation


def test_disabled_rules_count_for_nothing(rules, make_contact, system_actor):
    contact = make_contact("off@example.com", phone=PHONE)
    ScoringRule.objects.filter(kind="profile").update(enabled=False)
    score, explanation = lead_score_recompute(contact=contact, actor=system_actor)
    assert (score, explanation) == (0, [])


@pytest.mark.parametrize(
    ("field", "operator", "value", "fields", "matches"),
    [
        ("country", "equals", "us", {"country": "US"}, True),
        ("country", "not_equals", "US", {"country": "DE"}, True),
        ("country", "not_equals", "US", {"country": "US"}, False),
        ("churn_risk", "gte", "0.5", {"churn_risk": 0.7}, True),
        ("churn_risk", "lte", "0.5", {"churn_risk": 0.7}, False),
        ("date_of_birth", "lte", "1990-01-01", {"date_of_birth": "1985-05-05"}, True),
        ("tags", "contains", "VIP", {"tags": ["vip", "b2b"]}, True),
        ("tags", "present", "", {"tags": []}, False),
        ("is_paid", "equals", "true", {"is_paid": True}, True),
        ("is_paid", "equals", "true", {}, False),
        ("company", "present", "", {}, False),
    ],
)
def test_profile_rule_operators(field, operator, value, fields, matches, make_contact):
    contact = make_contact(f"{field}-{operator}@example.com", **fields)
    rule = ScoringRule(name="r", kind="profile", field=field, operator=operator, value=value, points=1)
    rule.full_clean()
    assert Contact.objects.filter(profile_rule_q(rule), pk=contact.pk).exists() is matches


def test_rules_that_do_not_fit_their_field_are_refused():
    with pytest.raises(ValidationError):
        ScoringRule(name="a", kind="profile", field="email", operator="gte", value="3", points=1).full_clean()
    with pytest.raises(ValidationError):
        ScoringRule(name="b", kind="profile", field="phone", operator="equals", value="", points=1).full_clean()
    with pytest.raises(ValidationError):
        ScoringRule(name="c", kind="event", points=1).full_clean()


def test_recompute_all_in_batches_writes_only_what_changed(rules, make_contact, system_actor):
    contacts = [make_contact(f"b{i}@example.com", **({"phone": PHONE} if i % 2 else {})) for i in range(5)]
    assert lead_scores_recompute(actor=system_actor, batch_size=2) == 5
    scores = dict(Contact.objects.values_list("pk", "lead_score"))
    assert [scores[c.pk] for c in contacts] == [5, 10, 5, 10, 5]
    assert AuditEvent.objects.filter(action="contact.scores").count() == 3  # one per batch
    assert lead_scores_recompute(actor=system_actor, batch_size=2) == 0  # idempotent
    ScoringRule.objects.update(enabled=False)
    assert lead_scores_recompute(actor=system_actor) == 5
    assert set(Contact.objects.values_list("lead_score", flat=True)) == {0}


def test_recompute_some_contacts_only(rules, make_contact, system_actor):
    one, two = make_contact("one@example.com"), make_contact("two@example.com")
    assert lead_scores_recompute(actor=system_actor, contact_ids=[two.pk]) == 1
    one.refresh_from_db()
    two.refresh_from_db()
    assert (one.lead_score, two.lead_score) == (0, 5)


# ----------------------------------------------------------------------------- CLV


def test_clv_is_average_order_times_yearly_frequency_times_lifetime(make_contact, system_actor):
    now = timezone.now()
    half_year = dt.timedelta(days=365.25 / 2)
    regular = make_contact("regular@example.com")
    order_record(contact=regular, amount=Decimal("100"), actor=system_actor, paid_at=now - half_year)
    order_record(contact=regular, amount=Decimal("200"), actor=system_actor, paid_at=now - dt.timedelta(days=10))
    newcomer = make_contact("new@example.com")
    order_record(contact=newcomer, amount=Decimal("40"), actor=system_actor, paid_at=now - dt.timedelta(days=1))
    refunded = make_contact("refund@example.com")
    order_record(contact=refunded, amount=Decimal("999"), actor=system_actor, status="refunded")
    nobody = make_contact("nobody@example.com")

    assert clv_recompute(actor=system_actor) == 2
    values = dict(Contact.objects.values_list("pk", "clv"))
    # 150 average * (2 orders / half a year = 4 a year) * 3 years
    assert values[regular.pk] == pytest.approx(Decimal("1800"), abs=Decimal("0.05"))
    # one order: the span counts as a month, so 12 a year: 40 * 12 * 3
    assert values[newcomer.pk] == pytest.approx(Decimal("1440"), abs=Decimal("0.05"))
    assert values[refunded.pk] == values[nobody.pk] == Decimal("0")


def test_clv_follows_the_lifetime_setting_and_drops_to_zero_without_paid_orders(make_contact, system_actor):
    contact = make_contact("c@example.com")
    order, _ = order_record(
        contact=contact, amount=Decimal("50"), actor=system_actor, paid_at=timezone.now() - dt.timedelta(days=2)
    )
    ClvSettings.objects.filter(pk=1).update(expected_lifetime_years=Decimal("1"))
    clv_recompute(actor=system_actor, contact_ids=[contact.pk])
    contact.refresh_from_db()
    assert contact.clv == pytest.approx(Decimal("600"), abs=Decimal("0.05"))  # 50 * 12 * 1
    type(order).objects.filter(pk=order.pk).update(status="refunded")
    assert clv_recompute(actor=system_actor, batch_size=1) == 1
    contact.refresh_from_db()
    assert contact.clv == Decimal("0")
