"""Pipeline stats and lifecycle funnels on small datasets whose answers are known."""

import datetime as dt
from decimal import Decimal

import pytest
from django.http import Http404
from django.utils import timezone

from compliance.models import AuditEvent
from contacts.services import lifecycle_transition
from leads.models import Deal, DealStageChange, StageRollup
from leads.selectors import funnels, lead_status_counts, pipeline_rollup_drift, pipeline_stats
from leads.services import deal_create, deal_move_stage, deal_update, lead_capture, lead_set_status
from leads.tasks import pipeline_rollup_check

pytestmark = pytest.mark.django_db


def _deal(actor, stages, key, amount, *, owner=None, days_in_appointment=None):
    deal = deal_create(actor=actor, name=f"{key} {amount}", amount=amount, owner=owner)
    if key != "appointment":
        if days_in_appointment is not None:
            entered = timezone.now() - dt.timedelta(days=days_in_appointment)
            Deal.objects.filter(pk=deal.pk).update(stage_entered_at=entered)
        deal = deal_move_stage(deal=deal, stage=stages[key], actor=actor)
    return deal


@pytest.fixture
def dataset(system_actor, stages, make_staff):
    rep = make_staff("rep")
    _deal(system_actor, stages, "appointment", 100, owner=rep)
    _deal(system_actor, stages, "appointment", 300)
    _deal(system_actor, stages, "proposal", 1000, owner=rep, days_in_appointment=2)
    for _ in range(3):
        _deal(system_actor, stages, "closedwon", 50, days_in_appointment=4)
    _deal(system_actor, stages, "closedlost", 500, owner=rep, days_in_appointment=6)
    return {"rep": rep}


def by_key(stats):
    return {row["key"]: row for row in stats["stages"]}


def test_pipeline_stats_per_stage_and_win_rate(dataset, pipeline, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):
        stats = pipeline_stats(pipeline=pipeline)
    rows = by_key(stats)
    assert [row["key"] for row in stats["stages"]] == [
        "appointment",
        "qualification",
        "proposal",
        "negotiation",
        "closedwon",
        "closedlost",
    ]
    summary = {k: (r["count"], r["amount"], r["weighted_amount"]) for k, r in rows.items()}
    assert summary == {
        "appointment": (2, Decimal("400"), Decimal("80.00")),
        "qualification": (0, Decimal("0"), Decimal("0.00")),
        "proposal": (1, Decimal("1000"), Decimal("600.00")),
        "negotiation": (0, Decimal("0"), Decimal("0.00")),
        "closedwon": (3, Decimal("150"), Decimal("150.00")),
        "closedlost": (1, Decimal("500"), Decimal("0.00")),
    }
    # Days in appointment before moving on: 2, 4, 4, 4, 6.
    assert rows["appointment"]["avg_days_in_stage"] == pytest.approx(4.0, abs=0.01)
    assert rows["proposal"]["avg_days_in_stage"] is None
    assert (stats["won"], stats["lost"], stats["win_rate"]) == (3, 1, 0.75)
    assert stats["currency"] == "USD"
    assert stats["totals"] == {
        "count": 7,
        "amount": Decimal("2050"),
        "weighted_amount": Decimal("830.00"),
        "open_count": 3,
        "by_currency": [
            {"currency": "USD", "count": 7, "amount": Decimal("2050"), "weighted_amount": Decimal("830.00")}
        ],
    }


def test_pipeline_stats_for_one_owner(dataset, pipeline):
    stats = pipeline_stats(pipeline=pipeline, owner=dataset["rep"].pk)
    rows = by_key(stats)
    assert (rows["appointment"]["count"], rows["proposal"]["count"], rows["closedlost"]["count"]) == (1, 1, 1)
    assert rows["appointment"]["avg_days_in_stage"] == pytest.approx(4.0, abs=0.01)  # 2 and 6
    assert (stats["won"], stats["lost"], stats["win_rate"]) == (0, 1, 0.0)


def test_pipeline_stats_over_a_date_range(dataset, pipeline):
    old = Deal.objects.filter(stage__key="closedwon").order_by("id")[:2]
    Deal.objects.filter(pk__in=[d.pk for d in old]).update(created_at=timezone.now() - dt.timedelta(days=40))
    DealStageChange.objects.filter(deal__in=list(old)).update(at=timezone.now() - dt.timedelta(days=40))
    stats = pipeline_stats(pipeline=pipeline, since=timezone.now() - dt.timedelta(days=30))
    assert by_key(stats)["closedwon"]["count"] == 1
    assert stats["win_rate"] == 0.5
    earlier = pipeline_stats(pipeline=pipeline, until=timezone.now() - dt.timedelta(days=30))
    assert earlier["totals"]["count"] == 2


def test_pipeline_stats_of_an_empty_pipeline(pipeline):
    stats = pipeline_stats(pipeline=pipeline)
    assert stats["win_rate"] is None and stats["totals"]["count"] == 0


def test_lead_status_counts(system_actor):
    for i in range(3):
        lead = lead_capture(actor=system_actor, source="api", email=f"s{i}@example.com")
    lead_set_status(lead=lead, status="qualified", actor=system_actor)
    assert lead_status_counts() == {"new": 2, "contacted": 0, "qualified": 1, "unqualified": 0, "converted": 0}


# ----------------------------------------------------------------------------- funnels


def _walk(contact, actor, moves):
    for stage, days_ago in moves:
        lifecycle_transition(
            contact=contact,
            to_stage=stage,
            reason="test",
            actor=actor,
            occurred_at=timezone.now() - dt.timedelta(days=days_ago),
        )


@pytest.fixture
def journeys(make_contact, system_actor, make_staff):
    rep = make_staff("rep")
    fast = make_contact("fast@example.com", source="referral", owner=rep)
    _walk(fast, system_actor, [("patient", 10), ("active_customer", 7)])
    slow = make_contact("slow@example.com", source="website_form")
    _walk(slow, system_actor, [("patient", 20), ("active_customer", 10)])
    stuck = make_contact("stuck@example.com", source="referral")
    _walk(stuck, system_actor, [("patient", 5)])
    early = make_contact("early@example.com")
    _walk(early, system_actor, [("patient", 100), ("active_customer", 3)])  # entered before the range
    return {"rep": rep}


def test_purchase_funnel_counts_rate_and_median(journeys):
    now = timezone.now()
    result = funnels(name="purchase", since=now - dt.timedelta(days=30), until=now)
    assert (result["from_stage"], result["to_stage"]) == ("patient", "active_customer")
    assert (result["entered"], result["converted"]) == (3, 2)
    assert result["rate"] == pytest.approx(0.6667, abs=0.0001)
    assert result["median_days"] == pytest.approx(6.5, abs=0.01)  # 3 and 10 days


def test_funnel_by_source_and_owner(journeys):
    now = timezone.now()
    since = now - dt.timedelta(days=30)
    referral = funnels(name="purchase", since=since, until=now, source="referral")
    assert (referral["entered"], referral["converted"], referral["median_days"]) == (2, 1, pytest.approx(3, abs=0.01))
    owned = funnels(name="purchase", since=since, until=now, owner=journeys["rep"].pk)
    assert (owned["entered"], owned["converted"]) == (1, 1)


def test_funnel_with_nobody_entering(journeys):
    now = timezone.now()
    result = funnels(name="advocacy", since=now - dt.timedelta(days=30), until=now)
    assert (result["entered"], result["converted"], result["rate"], result["median_days"]) == (0, 0, None, None)


def test_consultation_funnel_starts_when_the_contact_is_created(make_contact, system_actor):
    for i in range(4):
        contact = make_contact(f"v{i}@example.com")
        if i == 0:
            _walk(contact, system_actor, [("patient", 0)])
    now = timezone.now()
    result = funnels(name="consultation", since=now - dt.timedelta(days=1), until=now + dt.timedelta(minutes=1))
    assert (result["entered"], result["converted"], result["rate"]) == (4, 1, 0.25)


def test_consultation_funnel_narrows_by_source_and_owner_and_leaves_merged_contacts_out(
    make_contact, make_staff, system_actor
):
    """The funnel from Visitor reads its cohort from the contacts themselves (no transition marks
    a creation), narrowed there as the others are narrowed through their join."""
    rep = make_staff("rep")
    mine = make_contact("mine@example.com", source="referral", owner=rep)
    _walk(mine, system_actor, [("patient", 0)])
    make_contact("theirs@example.com", source="referral")
    make_contact("web@example.com", source="website_form", owner=rep)
    merged = make_contact("merged@example.com", source="referral")
    merged.merged_into = mine
    merged.save(update_fields=["merged_into"])
    now = timezone.now()
    window = {"name": "consultation", "since": now - dt.timedelta(days=1), "until": now + dt.timedelta(minutes=1)}
    counts = [
        (result["entered"], result["converted"])
        for result in (
            funnels(**window),
            funnels(**window, source="referral"),
            funnels(**window, owner=rep.pk),
            funnels(**window, source="referral", owner=rep.pk),
        )
    ]
    assert counts == [(3, 1), (2, 1), (2, 1), (1, 1)]


def test_unknown_funnel_is_404():
    with pytest.raises(Http404):
        funnels(name="nope", since=timezone.now(), until=timezone.now())


def _scanned(pipeline):
    """The same stats through the scan path (a date filter that excludes nothing)."""
    return pipeline_stats(pipeline=pipeline, until=timezone.now() + dt.timedelta(days=1))


def test_the_rollup_agrees_with_a_full_scan_after_every_kind_of_write(dataset, pipeline, stages, system_actor):
    deal = Deal.objects.filter(stage__key="appointment").first()
    deal_update(deal=deal, actor=system_actor, amount=Decimal("275.50"))
    Deal.objects.filter(stage__key="closedwon").first().delete()  # cascades to its history
    Deal.objects.bulk_create(
        [Deal(name=f"bulk {i}", pipeline=pipeline, stage=stages["proposal"], amount=Decimal(i)) for i in range(5)]
    )
    Deal.objects.filter(name="bulk 0").update(stage=stages["negotiation"], amount=Decimal("9"))
    Deal.objects.filter(name="bulk 1").update(name="renamed")  # no stage or amount change
    Deal.objects.filter(name="bulk 2").update(currency="EUR")  # a currency change alone
    deal_update(deal=Deal.objects.get(name="bulk 3"), actor=system_actor, currency="gbp", amount=Decimal("7"))
    deal_move_stage(deal=Deal.objects.get(name="renamed"), stage=stages["closedwon"], actor=system_actor)

    assert pipeline_rollup_drift() == []
    fast, scanned = pipeline_stats(pipeline=pipeline), _scanned(pipeline)
    assert fast["stages"] == scanned["stages"] and fast["totals"] == scanned["totals"]
    assert by_key(fast)["proposal"]["count"] == 4  # the original and 3 of the bulk 5
    assert [part["currency"] for part in by_key(fast)["proposal"]["by_currency"]] == ["EUR", "GBP", "USD"]
    assert by_key(fast)["closedwon"]["count"] == 3


def test_the_nightly_check_rebuilds_a_rollup_that_drifted(dataset, pipeline):
    expected = pipeline_stats(pipeline=pipeline)
    StageRollup.objects.update(deals=0, moves_out=0)  # as if rows were loaded with triggers off
    assert pipeline_rollup_drift()
    assert pipeline_rollup_check() > 0
    assert pipeline_rollup_drift() == []
    assert pipeline_stats(pipeline=pipeline) == expected
    assert AuditEvent.objects.filter(action="pipeline.rollup_rebuilt").count() == 1
    assert pipeline_rollup_check() == 0
