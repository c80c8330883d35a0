import base64
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def _refused_cursor(response) -> None:
    """A cursor that is not one of ours is bad input (400 naming `cursor`), not a missing list."""
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "validation_error" and list(error["fields"]) == ["cursor"], error


def test_bad_cursor_is_400_naming_the_cursor(key_client):
    _refused_cursor(key_client().get("/t/audit", {"cursor": "garbage"}))
    _refused_cursor(key_client().get("/api/v1/contacts", {"cursor": "garbage"}))


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


def test_a_cursor_from_another_ordering_is_400(key_client, system_actor):
    """A timeline cursor carries two values; a list ordered by id alone takes one."""
    _audit_rows(system_actor, 1)
    cursor = base64.b64encode(b"p=2024-01-01+00%3A00%3A00%2B00%3A00&p=5").decode()
    _refused_cursor(key_client().get("/t/audit", {"cursor": cursor}))


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
    from contacts.tests.factories import ContactFactory

    contact = ContactFactory()
    client = key_client(["contacts:read"])
    url = f"/api/v1/contacts/{contact.pk}/timeline"
    tampered = base64.b64encode(b"p=2024-01-01+00%3A00%3A00%2B20%3A00&p=5").decode()
    assert client.get(url, {"cursor": tampered}).status_code == 200
    before_year_one = base64.b64encode(b"p=0001-01-01+00%3A00%3A00%2B05%3A00&p=5").decode()
    _refused_cursor(client.get(url, {"cursor": before_year_one}))


def _cursor(tokens: list[tuple[str, str]]) -> str:
    return base64.b64encode(urlencode(tokens).encode()).decode()


@pytest.mark.parametrize(
    ("url", "cursor"),
    [
        ("/api/v1/contacts", "garbage"),  # not base64
        ("/api/v1/contacts", "é"),  # not ASCII
        ("/api/v1/contacts", base64.b64encode(b"\xff\xfe").decode()),  # base64 of no text
        ("/api/v1/contacts", base64.b64encode(b'{"p": [5]}').decode()),  # JSON (DRF's own cursors are not either)
        ("/api/v1/contacts", _cursor([("r", "yes")])),  # the direction is not 0 or 1
        ("/api/v1/contacts", _cursor([("p", "5"), ("p", "4")])),  # two positions for one field
        ("/api/v1/contacts", _cursor([("p", "five")])),  # not an id
        ("/api/v1/contacts", _cursor([("p", "")])),
        ("{timeline}", _cursor([("p", "5")])),  # one position for two fields
        ("{timeline}", _cursor([("p", "2024-02-30T00:00:00+00:00"), ("p", "5")])),  # no such date
        ("{timeline}", _cursor([("p", "yesterday"), ("p", "5")])),
        ("{timeline}", _cursor([("p", "9999-12-31T23:00:00-05:00"), ("p", "5")])),  # past the year 9999 in UTC
        ("{timeline}", _cursor([("p", "2024-01-01T00:00:00+00:00"), ("p", "5.5")])),
    ],
)
def test_every_kind_of_bad_cursor_is_400(key_client, url, cursor):
    from contacts.tests.factories import ContactFactory

    url = url.format(timeline=f"/api/v1/contacts/{ContactFactory().pk}/timeline")
    _refused_cursor(key_client(["contacts:read"]).get(url, {"cursor": cursor}))


_values = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.datetimes().map(lambda d: d.isoformat()),
    st.builds(
        lambda d, minutes: (
            f"{d.isoformat()}{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02}:{abs(minutes) % 60:02}"
        ),
        st.datetimes(),
        st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
    ),
    st.dates().map(str),
    st.sampled_from(["NaN", "inf", "-0", "1e3", "0x10", "\x00", "2024-02-30", "24:00"]),
)
_tokens = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["p", "p", "p", "r", "x"]), _values),
        st.tuples(st.just("r"), st.sampled_from(["0", "1", "-1", "2", "", "01"])),
    ),
    max_size=4,
)
_cursors = st.one_of(
    _tokens.map(_cursor),
    st.binary(max_size=40).map(lambda raw: base64.b64encode(raw).decode()),
    st.text(max_size=40),
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cursor=_cursors)
def test_a_cursor_is_a_page_or_a_400_naming_it_never_404_or_500(key_client, cursor):
    """Whatever a client sends as the cursor (tampered, truncated, from another list, or any
    text), the list answers a page or a 400 naming `cursor`: never a 404 (the list exists) nor a
    500 (a value the database refuses)."""
    from contacts.tests.factories import ContactFactory

    client = key_client(["contacts:read"])
    contact = ContactFactory()
    for url in ("/api/v1/contacts", f"/api/v1/contacts/{contact.pk}/timeline"):
        response = client.get(url, {"cursor": cursor})
        if response.status_code != 200:
            _refused_cursor(response)
