import pytest

from compliance.services import audit_record

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.urls")]


def test_lists_use_cursor_pagination_newest_first(key_client, system_actor):
    client = key_client(["contacts:read"])
    for n in range(5):
        audit_record(actor=system_actor, action=f"test.{n}")
    page = client.get("/t/audit", {"limit": 2}).json()
    assert [row["action"] for row in page["results"]] == ["test.4", "test.3"]
    assert "count" not in page  # no COUNT(*) on large tables
    page2 = client.get(page["next"]).json()
    assert [row["action"] for row in page2["results"]] == ["test.2", "test.1"]
    assert page2["previous"]


def test_limit_is_capped(key_client, system_actor):
    audit_record(actor=system_actor, action="x")
    assert key_client().get("/t/audit", {"limit": 100000}).status_code == 200


def test_filters_come_from_django_filter(key_client, system_actor):
    audit_record(actor=system_actor, action="wanted")
    audit_record(actor=system_actor, action="other")
    rows = key_client().get("/t/audit", {"action": "wanted"}).json()["results"]
    assert [row["action"] for row in rows] == ["wanted"]


def test_bad_cursor_is_404_json(key_client):
    response = key_client().get("/t/audit", {"cursor": "garbage"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def _audit_rows(system_actor, count):
    for n in range(count):
        audit_record(actor=system_actor, action=f"test.{n}")


def test_previous_links_walk_back_over_the_pages_next_links_walked(key_client, system_actor):
    _audit_rows(system_actor, 5)
    client = key_client(["contacts:read"])
    pages = [client.get("/t/audit", {"limit": 2}).json()]
    while pages[-1]["next"]:
        pages.append(client.get(pages[-1]["next"]).json())
    assert len(pages) >= 3
    page = pages[-1]
    for expected in reversed(pages[:-1]):
        page = client.get(page["previous"]).json()
        assert page["results"] == expected["results"]
    assert page["previous"] is None
    assert client.get(page["next"]).json()["results"] == pages[1]["results"]


def test_a_cursor_from_another_ordering_is_404(key_client, system_actor):
    """A timeline cursor carries two values; a list ordered by id alone takes one."""
    import base64

    _audit_rows(system_actor, 1)
    cursor = base64.b64encode(b"p=2024-01-01+00%3A00%3A00%2B00%3A00&p=5").decode()
    response = key_client().get("/t/audit", {"cursor": cursor})
    assert response.status_code == 404


@pytest.mark.parametrize("offset", [16 * 60, -(23 * 60 + 59)])
def test_a_date_time_filter_takes_any_offset_python_reads_as_its_moment(key_client, offset):
    """Python reads UTC offsets up to 23:59; PostgreSQL refuses any beyond 15:59 ("time zone
    displacement out of range"). django-filter passed the value on with its offset: a 500 on
    the contact and lead lists. In UTC it is an ordinary moment."""
    from django.utils import timezone

    from contacts.tests.factories import ContactFactory
    from leads.models import Lead

    contact = ContactFactory()
    lead = Lead.objects.create(contact=contact, source=Lead.Source.API)
    client = key_client(["contacts:read", "leads:read"])
    zone = timezone.get_fixed_timezone(offset)
    for url, name, row_id, stamp in (
        ("/api/v1/contacts", "updated_since", contact.pk, contact.updated_at),
        ("/api/v1/leads", "created_since", lead.pk, lead.created_at),
    ):
        for moment, expected in (
            (stamp - timezone.timedelta(minutes=1), [row_id]),
            (stamp + timezone.timedelta(minutes=1), []),
        ):
            response = client.get(url, {name: moment.astimezone(zone).isoformat()})
            assert response.status_code == 200, (url, response.content[:300])
            assert [row["id"] for row in response.json()["results"]] == expected


def test_a_timeline_cursor_is_read_in_utc(key_client):
    """A timeline cursor whose occurred_at carries a +20:00 offset (tampered: ours carry UTC)
    reached PostgreSQL as it was: a 500. Read in UTC, it is a position like any other; a moment
    before the year 1 in UTC is no cursor of ours."""
    import base64

    from contacts.tests.factories import ContactFactory

    contact = ContactFactory()
    client = key_client(["contacts:read"])
    url = f"/api/v1/contacts/{contact.pk}/timeline"
    tampered = base64.b64encode(b"p=2024-01-01+00%3A00%3A00%2B20%3A00&p=5").decode()
    assert client.get(url, {"cursor": tampered}).status_code == 200
    before_year_one = base64.b64encode(b"p=0001-01-01+00%3A00%3A00%2B05%3A00&p=5").decode()
    response = client.get(url, {"cursor": before_year_one})
    assert response.status_code == 404 and response.json()["error"]["message"] == "Invalid cursor"
