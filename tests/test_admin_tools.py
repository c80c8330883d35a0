import pytest
from django.db import connection

from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from crm_platform import admin_tools
from crm_platform.admin_tools import EstimatedCountPaginator

pytestmark = pytest.mark.django_db


def test_filtered_count_stops_at_the_cap(monkeypatch, django_assert_num_queries):
    monkeypatch.setattr(admin_tools, "COUNT_CAP", 5)
    ContactFactory.create_batch(9, engagement_tier="gold")
    paginator = EstimatedCountPaginator(Contact.objects.filter(engagement_tier="gold").order_by("pk"), 3)
    with django_assert_num_queries(1) as captured:
        assert paginator.count == 6
    assert "LIMIT 6" in captured.captured_queries[0]["sql"]


def test_unfiltered_count_uses_the_planner_estimate_on_big_tables(monkeypatch):
    monkeypatch.setattr(admin_tools, "COUNT_CAP", 5)
    ContactFactory.create_batch(20)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE contacts_contact")
    estimate = EstimatedCountPaginator(Contact.objects.order_by("pk"), 10).count
    assert estimate == admin_tools._estimate("contacts_contact") and estimate > 5


def test_small_tables_are_counted_exactly():
    ContactFactory.create_batch(3)
    assert EstimatedCountPaginator(Contact.objects.order_by("pk"), 10).count == 3


def test_big_table_changelists_count_no_facets(admin_client):
    """Facet counts are one COUNT per filter choice over the whole table (minutes on the audit
    log): FastChangeListMixin turns them off, the link to them included."""
    from django.test.utils import CaptureQueriesContext

    ContactFactory()
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get("/admin/contacts/contact/", {"_facets": "True"})
    html = response.content.decode()
    assert response.status_code == 200 and "Show counts" not in html and "Hide counts" not in html
    assert not [q["sql"] for q in captured.captured_queries if "FILTER (WHERE" in q["sql"]]


def test_distinct_values_reads_an_index_leading_with_the_column():
    """A skip scan: one index probe per value (contact_by_source_idx), not a read of the table."""
    from django.test.utils import CaptureQueriesContext

    from tests.support import index_names, index_plans

    ContactFactory.create_batch(3, source="app")
    ContactFactory(source="referral")
    with CaptureQueriesContext(connection) as captured:
        assert admin_tools.distinct_values(Contact, "source") == ["app", "referral"]
    assert admin_tools.distinct_values(Contact, "source", limit=1) == ["app"]
    [plan] = index_plans([captured.captured_queries[-1]["sql"]])
    assert index_names(plan) == {"contact_by_source_idx"}, plan
