"""orjson on the event routes: the same answers as DRF's JSON parser and renderer."""

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from contacts.tests.factories import ContactFactory
from crm_platform.api.fastjson import _has_long_digits, dumps, fingerprint_bytes
from integrations.models import InboundEvent

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("body", ["{not json", '{"events": [NaN]}', '{"events": [{"x": Infinity}]}'])
def test_malformed_json_is_a_400_with_a_json_body(key_client, body):
    app = key_client(["events:write"])
    for url in ("/api/v1/events/batch", "/api/v1/events"):
        response = app.generic("POST", url, body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k")
        assert response.status_code == 400, (url, response.content)
        assert response["Content-Type"].startswith("application/json")
        assert "JSON parse error" in response.json()["error"]["message"]


def test_the_batch_answer_is_plain_json(key_client):
    app = key_client(["events:write"])
    response = app.post("/api/v1/events/batch", {"events": [{"id": "x", "type": "teleport"}]}, format="json")
    assert response.status_code == 202
    assert json.loads(response.content) == {
        "results": [{"id": "x", "status": "rejected", "errors": response.json()["results"][0]["errors"]}],
        "accepted": 0,
        "replayed": 0,
        "rejected": 1,
    }


def test_documents_for_postgresql_keep_decimals_exact_and_fingerprints_ignore_key_order():
    assert json.loads(dumps({"amount": Decimal("19.990")})) == {"amount": "19.990"}
    assert fingerprint_bytes({"b": 1, "a": {"d": 2, "c": 3}}) == fingerprint_bytes({"a": {"c": 3, "d": 2}, "b": 1})


def test_a_nul_character_is_a_400_not_a_database_error(key_client):
    app = key_client(["events:write"])
    body = {"type": "custom", "user": {"external_id": "u\u0000x"}}
    single = app.post("/api/v1/events", body, format="json", HTTP_IDEMPOTENCY_KEY="nul")
    batch = app.post(
        "/api/v1/events/batch", {"events": [{**body, "id": "a", "properties": {"n": "\u0000"}}]}, format="json"
    )
    for response in (single, batch):
        assert response.status_code == 400 and "NUL" in response.json()["error"]["message"]


def _documents():

    scalars = (
        st.none()
        | st.booleans()
        | st.integers()  # beyond 64 bits too
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text()
        | st.decimals(allow_nan=False, allow_infinity=False)
        | st.datetimes(timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))]))
        | st.datetimes()
        | st.dates()
        | st.times()
        | st.uuids()
    )
    keys = st.text() | st.integers(min_value=-1000, max_value=1000)
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=20
    )


@settings(max_examples=300, deadline=None)
@given(document=_documents())
@example(document={"big": 2**70, "at": dt.datetime(2026, 11, 26, 20, 0, 0, 123456, tzinfo=dt.UTC)})
def test_django_dumps_reads_back_as_json_dumps_with_djangos_encoder(document):
    """The applier's documents moved from json.dumps(cls=DjangoJSONEncoder) to django_dumps: what
    PostgreSQL reads from them (the parsed value) must not change, datetimes to the millisecond
    and decimals exact included."""
    from django.core.serializers.json import DjangoJSONEncoder

    from crm_platform.api.fastjson import django_dumps

    assert json.loads(django_dumps(document)) == json.loads(json.dumps(document, cls=DjangoJSONEncoder))


def test_integers_beyond_64_bits_are_refused_not_rounded(key_client):
    """orjson reads them as floats; the parser notices and answers 400 rather than keep a
    rounded number. Long digit runs in strings, and integers that fit, pass untouched."""
    app = key_client(["events:write"])
    ContactFactory(email=None, external_id="u-1")

    def post(properties):
        event = {"id": "e", "type": "custom", "user": {"external_id": "u-1"}, "properties": properties}
        return app.post("/api/v1/events/batch", {"events": [event]}, format="json")

    refused = post({"n": 123456789012345678901234567890})
    assert refused.status_code == 400
    assert "beyond 64 bits" in refused.json()["error"]["message"]
    fits = post({"n": 18446744073709551615, "ref": "123456789012345678901234567890"})
    assert fits.status_code == 202 and fits.json()["accepted"] == 1
    stored = InboundEvent.objects.get(key="event:e").payload["properties"]
    assert stored == {"n": 18446744073709551615, "ref": "123456789012345678901234567890"}


@given(st.binary(max_size=80) | st.text(alphabet='0123456789a"', max_size=80).map(str.encode))
def test_the_long_digit_scan_finds_exactly_what_a_regular_expression_finds(body):
    assert _has_long_digits(body) == bool(re.search(rb"\d{20,}", body))


@pytest.mark.parametrize(
    ("url", "body"),
    [
        # 1e400 is a double's infinity: no integer id, no jsonb number.
        ("/api/v1/notes", '{"contact": 1e400, "body": "x"}'),
        ("/api/v1/orders", '{"contact": %(contact)d, "amount": "1.00", "items": [{"qty": 1e400}]}'),
        # A lone surrogate cannot be written as UTF-8, not even in the error that quotes it.
        ("/api/v1/tickets", '{"contact": %(contact)d, "subject": "x", "priority": "\\ud800"}'),
        ("/api/v1/leads", '{"email": "s@example.com", "source": "api", "assessment": {"a": "\\ud800"}}'),
        # PostgreSQL's jsonb refuses NUL.
        ("/api/v1/orders", '{"contact": %(contact)d, "amount": "1.00", "items": [{"sku": "\\u0000"}]}'),
        # Nested deeper than Python's recursion limit.
        ("/api/v1/contacts", "[" * 100_000),
    ],
)
def test_every_route_refuses_json_the_rest_of_the_request_cannot_hold_with_a_400(key_client, url, body):
    """The project's parser on every route, not only the event routes: these were 500s, or
    stored (the lead's lone surrogate, kept for every later read to choke on); now they are
    refused before anything runs."""
    from compliance.models import AuditEvent

    crm = key_client(["contacts:write", "tickets:write", "leads:write"])
    body %= {"contact": ContactFactory().pk} if "%(contact)d" in body else {}
    before = AuditEvent.objects.count()
    response = crm.generic("POST", url, body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert "JSON parse error" in response.json()["error"]["message"]
    assert AuditEvent.objects.count() == before


@pytest.mark.parametrize(
    ("depth", "leaf", "status"),
    [(250, '"12345678901234567890"', 201), (400, '"12345678901234567890"', 400), (1000, "1.5", 400)],
)
def test_deep_nesting_beside_long_digits_is_never_a_500(key_client, depth, leaf, status):
    """Twenty digits in a row made the parser read the body a second time, recursively: 340
    levels (which orjson takes) broke Python's recursion limit, a 500 on any route."""
    crm = key_client(["contacts:write"])
    digits = '"12345678901234567890"'
    body = '{"email": "deep@example.com", "x": ' + "[" * depth + f"{leaf}, {digits}" + "]" * depth + "}"
    response = crm.generic("POST", "/api/v1/contacts", body, content_type="application/json")
    assert response.status_code == status, response.content[:300]


@pytest.mark.parametrize(
    ("url", "template"),
    [
        ("/api/v1/contacts", '{"email": "deep@example.com", "tags": %(deep)s}'),
        ("/api/v1/leads", '{"email": "deep@example.com", "source": "api", "assessment": {"x": %(deep)s}}'),
        ("/api/v1/orders", '{"contact": %(contact)d, "amount": "1.00", "items": [{"x": %(deep)s}]}'),
        (
            "/api/v1/contacts/bulk-upsert",
            '{"contacts": [{"email": "deep@example.com", "properties": {"x": %(deep)s}}]}',
        ),
    ],
)
def test_json_nested_deeper_than_the_rest_of_a_request_can_walk_is_a_400(key_client, url, template):
    """orjson takes 1,024 levels; DRF's fields (str() of a list), json.dumps (storing a JSON
    column) and the PHI guard's recursive walk break Python's recursion limit well before: a
    value 900 levels deep in a field that takes a list or an object was a 500 on these routes."""
    crm = key_client(["contacts:write", "leads:write"])
    body = template % {"deep": "[" * 900 + "]" * 900, "contact": ContactFactory().pk}
    response = crm.generic("POST", url, body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert "nested too deep" in response.json()["error"]["message"]
