"""manage.py generate_data: counts, the model's rules, reproducibility, top-ups and progress."""

import io
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count, Max, Min

from contacts.lifecycle import Stage
from contacts.models import Activity, Contact, Order

pytestmark = pytest.mark.django_db

UNTIL = "2025-06-01"
CONTACT_FIELDS = [f.attname for f in Contact._meta.concrete_fields if f.attname != "id"]
E164 = re.compile(r"^\+[1-9]\d{7,14}$")


def generate(*args: str) -> str:
    out = io.StringIO()
    call_command("generate_data", "--until", UNTIL, "--jobs", "1", *args, stdout=out)
    return out.getvalue()


def generated_contacts():
    return Contact.objects.filter(external_id__startswith="gen-")


def contact_rows(numbers) -> list[tuple]:
    """Generated contacts by number, without the database's ids."""
    by_number = {c["external_id"]: c for c in generated_contacts().values(*CONTACT_FIELDS)}
    return [tuple(by_number[f"gen-{n}"][f] for f in CONTACT_FIELDS) for n in numbers]


def activity_rows(limit: int = 50) -> list[tuple]:
    """The first generated activities (in load order), naming their contact by app user id."""
    rows = Activity.objects.filter(source="generated").order_by("id")[:limit]
    return list(rows.values_list("contact__external_id", "type", "occurred_at", "properties", "created_at"))


def delete_generated() -> None:
    generated_contacts().delete()  # activities and orders go with them


def test_generates_the_requested_volume_with_progress():
    out = generate("--contacts", "2000", "--activities", "5000", "--orders", "100", "--seed", "7")

    assert generated_contacts().count() == 2000
    assert Activity.objects.filter(source="generated").count() == 5000
    assert Order.objects.filter(external_id__startswith="gen-order-").count() == 100
    assert "contacts: 2,000/2,000 (100%)" in out
    assert "activities: 5,000/5,000 (100%)" in out
    assert "orders: 100/100 (100%)" in out
    assert re.search(r"contacts: added 2,000 in [\d.]+s \([\d,]+ rows/s\)", out)
    for table in ("contacts_contact", "contacts_activity", "contacts_order"):
        assert f"analyzed {table} in" in out  # inside the test transaction: ANALYZE only


def test_generated_contacts_satisfy_the_models_rules(django_user_model):
    staff = [
        django_user_model.objects.create_user(username=f"owner{i}", password="a-long-test-password", is_staff=True)
        for i in range(2)
    ]
    generate("--contacts", "2000", "--activities", "3000")

    contacts = list(generated_contacts())
    emails = [c.email for c in contacts if c.email is not None]
    assert len(emails) == len(set(emails)) > 1800
    assert all(email == email.lower() for email in emails)
    assert all(email.endswith(("@example.com", "@example.org", "@example.net")) for email in emails)
    assert {c.lifecycle_stage for c in contacts} == set(Stage.values)
    assert {c.engagement_tier for c in contacts} == set(Contact.Tier.values)
    assert all(0 <= c.lead_score <= 100 and 0 <= c.churn_risk <= 1 for c in contacts)
    assert all(c.phone == "" or E164.match(c.phone) for c in contacts)
    assert all(c.updated_at >= c.created_at and not c.is_archived for c in contacts)
    assert {c.owner_id for c in contacts} == {None, *(u.pk for u in staff)}
    for contact in contacts[:200]:
        contact.full_clean()  # lengths, choices, e-mail syntax, validators

    end = datetime(2025, 6, 1, tzinfo=UTC)
    window = generated_contacts().aggregate(first=Min("created_at"), last=Max("updated_at"))
    assert end - timedelta(days=730) <= window["first"] and window["last"] <= end


def test_activities_go_to_generated_contacts_after_they_arrived():
    generate("--contacts", "500", "--activities", "3000")

    activities = list(Activity.objects.select_related("contact"))
    assert all(a.contact.external_id.startswith("gen-") for a in activities)
    assert all(a.contact.created_at <= a.occurred_at <= datetime(2025, 6, 1, tzinfo=UTC) for a in activities)
    assert all(isinstance(a.properties, dict) and a.properties for a in activities)
    busiest = Activity.objects.values("contact").annotate(n=Count("id")).aggregate(most=Max("n"))["most"]
    assert busiest > 12  # some contacts are much busier than the average of 6


def test_the_same_seed_gives_the_same_rows():
    generate("--contacts", "300", "--activities", "400", "--seed", "11")
    first_contacts, first_activities = contact_rows(range(1, 301)), activity_rows()
    delete_generated()

    generate("--contacts", "300", "--activities", "400", "--seed", "11")

    assert contact_rows(range(1, 301)) == first_contacts
    assert activity_rows() == first_activities
    delete_generated()
    generate("--contacts", "300", "--seed", "12")
    assert contact_rows(range(1, 301)) != first_contacts


def test_running_again_adds_only_what_is_missing_and_tops_up_like_one_run():
    generate("--contacts", "2500", "--seed", "3")
    one_run = contact_rows(range(1, 2501))
    delete_generated()

    generate("--contacts", "1500", "--seed", "3")
    again = generate("--contacts", "1500", "--seed", "3")
    assert "contacts: 1,500 generated already, none to add" in again
    assert generated_contacts().count() == 1500

    generate("--contacts", "2500", "--seed", "3")  # continues at gen-1501, mid-batch
    assert generated_contacts().count() == 2500
    assert contact_rows(range(1, 2501)) == one_run


def test_deals_go_through_the_default_pipeline_with_their_history():
    from leads.models import Deal, DealStageChange, Pipeline
    from leads.selectors import pipeline_stats

    out = generate("--contacts", "300", "--deals", "600")
    again = generate("--contacts", "300", "--deals", "600")

    deals = Deal.objects.filter(name__startswith="gen-deal-")
    assert deals.count() == 600
    assert "deals: 600 generated already, none to add" in again
    assert "deal history: added" in out
    assert not deals.filter(contact__external_id__isnull=True).exists()
    assert DealStageChange.objects.filter(deal__in=deals, from_stage=None).count() == 600  # one creation each
    assert all(d.created_at <= d.stage_entered_at for d in deals)
    stats = pipeline_stats(pipeline=Pipeline.objects.get(is_default=True))
    assert stats["totals"]["count"] == 600
    assert stats["won"] and stats["lost"]
    assert all(row["count"] for row in stats["stages"])
    assert all(row["avg_days_in_stage"] is not None for row in stats["stages"] if not row["is_won"] | row["is_lost"])


def test_generated_deals_are_in_their_pipelines_currency():
    """They were USD whatever the pipeline's currency, so a euro pipeline's stats headlined 0."""
    from django.db.models import Sum

    from leads.models import Deal, Pipeline
    from leads.selectors import pipeline_stats

    pipeline = Pipeline.objects.get(is_default=True)
    Pipeline.objects.filter(pk=pipeline.pk).update(currency="EUR")
    generate("--contacts", "100", "--deals", "200")

    deals = Deal.objects.filter(name__startswith="gen-deal-")
    assert set(deals.values_list("currency", flat=True)) == {"EUR"}
    totals = pipeline_stats(pipeline=Pipeline.objects.get(pk=pipeline.pk))["totals"]
    assert totals["amount"] == deals.aggregate(sum=Sum("amount"))["sum"] > 0
    assert [part["currency"] for part in totals["by_currency"]] == ["EUR"]


def test_generated_orders_are_in_the_reporting_currency_so_they_make_clvs(settings, system_actor):
    from leads.services import clv_recompute

    settings.CRM_REPORTING_CURRENCY = "EUR"
    generate("--contacts", "300", "--orders", "200")

    orders = Order.objects.filter(external_id__startswith="gen-order-")
    assert set(orders.values_list("currency", flat=True)) == {"EUR"}
    buyers = set(orders.filter(status="paid").values_list("contact_id", flat=True))
    assert clv_recompute(actor=system_actor) == len(buyers) > 0


def test_activities_need_generated_contacts():
    with pytest.raises(CommandError, match="No generated contacts"):
        generate("--activities", "10")


@pytest.mark.django_db(transaction=True)
def test_parallel_jobs_load_every_batch():
    out = io.StringIO()
    call_command("generate_data", "--contacts", "25000", "--until", UNTIL, "--jobs", "2", stdout=out)

    assert generated_contacts().count() == 25_000
    numbers = sorted(int(x.removeprefix("gen-")) for x in generated_contacts().values_list("external_id", flat=True))
    assert numbers == list(range(1, 25_001))
    assert "contacts: 25,000/25,000 (100%)" in out.getvalue()


def test_until_defaults_to_today():
    call_command("generate_data", "--contacts", "50", "--jobs", "1", stdout=io.StringIO())

    newest = generated_contacts().aggregate(last=Max("updated_at"))["last"]
    assert newest.date() <= date.today()
    assert newest > datetime.now(UTC) - timedelta(days=731)
