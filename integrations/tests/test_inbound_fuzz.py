"""Property-based: whatever arrives at the event routes, the answer is a 202 or a 4xx with a JSON
error body, never a 500; a refused request writes nothing; and every event accepted ends
applied or failed once the applier has run, never stuck pending or crashing the applier.

Envelopes are drawn near the valid shapes (known and unknown users, every declared type, each
type's own property names) as well as far from them (wrong JSON types, empty and oversized
strings, odd dates), so that the checks of each layer are reached."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from contacts.tests.factories import ContactFactory
from integrations.inbound import EVENT_TYPES
from integrations.inbound_apis import APP_EVENT_TYPES
from integrations.models import InboundEvent
from integrations.properties import Properties, Serialized
from integrations.tasks import inbox_apply

pytestmark = pytest.mark.django_db
FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
KNOWN_ID, KNOWN_EMAIL = "fuzz-known", "fuzz-known@example.com"


def _serializer_fields(kind: str) -> dict:
    """The DRF fields of a type whose schema is a serializer (their required ones are filled)."""
    schema = EVENT_TYPES[kind].schema
    return schema.serializer().fields if isinstance(schema, Serialized) else {}


def _declared(kind: str) -> set[str]:
    schema = EVENT_TYPES[kind].schema
    return set(_serializer_fields(kind)) | set(schema.checks if isinstance(schema, Properties) else ())


PROPERTY_NAMES = sorted(
    {name for kind in EVENT_TYPES for name in _declared(kind)}
    | {"occurredAt", "timestamp", "date", "phone", "calories", "name"}
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", " ", "9.99", "-1", "1e400", "EUR", "2024-02-30", "2024-05-01", "urgent", "x" * 300])
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
)
moments = (
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
    | st.sampled_from(["2024-05-01T10:00:00Z", "2024-05-01T10:00:00", "2024-02-30T00:00:00Z", "yesterday", ""])
    | st.integers(min_value=-(10**12), max_value=10**12)
    | json_values
)
identifiers = st.sampled_from([KNOWN_ID, "fuzz-new", "", " padded ", "x" * 200]) | json_values
emails = st.sampled_from([KNOWN_EMAIL, "New@Example.com", "not-an-email", "", "a@b"]) | json_values
users = (
    st.fixed_dictionaries({}, optional={"external_id": identifiers, "email": emails, "other": json_values})
    | json_values
)
properties = st.dictionaries(st.sampled_from(PROPERTY_NAMES), json_values, max_size=5) | json_values
wild_envelopes = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(EVENT_TYPES)) | json_values},
    optional={
        "user": users,
        "occurred_at": moments,
        "properties": properties,
        "source": st.sampled_from(["app", "crm", "marketing", "elsewhere"]) | json_values,
    },
)
# Near the valid shapes, so that most get past the envelope to the types' schemas, the user
# check and the applier.
plausible = st.text(max_size=20) | st.integers(0, 10**6) | st.booleans() | st.sampled_from(["9.99", "EUR", "urgent"])
near_properties = st.dictionaries(st.sampled_from(PROPERTY_NAMES), plausible, max_size=5)
near_users = st.sampled_from(
    [
        {"external_id": KNOWN_ID},
        {"external_id": KNOWN_ID},
        {"email": KNOWN_EMAIL},
        {"external_id": KNOWN_ID, "email": KNOWN_EMAIL.upper()},
        {"external_id": "fuzz-new"},
        {"email": "New@Example.com"},
        {"external_id": "fuzz-new", "email": KNOWN_EMAIL},
    ]
)
near_moments = st.datetimes(
    min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1), timezones=st.timezones()
).map(lambda d: d.isoformat())


def _valid(field) -> st.SearchStrategy:
    """A value the DRF field takes (drawn near its limits)."""
    if isinstance(field, serializers.ChoiceField):
        return st.sampled_from(sorted(field.choices))
    if isinstance(field, serializers.DecimalField):
        return st.decimals(min_value=0, max_value=10**9, places=2).map(str)
    if isinstance(field, serializers.IntegerField):
        return st.integers(min_value=field.min_value or 0, max_value=field.max_value or 10**6)
    if isinstance(field, serializers.EmailField):
        return st.emails().filter(lambda e: len(e) <= 254)
    if isinstance(field, serializers.DateTimeField | serializers.DateField):
        return near_moments.map(lambda m: m[:10] if isinstance(field, serializers.DateField) else m)
    if isinstance(field, serializers.DictField | serializers.JSONField):
        return st.dictionaries(st.text(max_size=8), plausible, max_size=3)
    if isinstance(field, serializers.ListField):
        return st.lists(st.dictionaries(st.text(max_size=8), plausible, max_size=2), max_size=3)
    if isinstance(field, serializers.BooleanField):
        return st.booleans()
    if isinstance(field, serializers.CharField):
        return st.text(min_size=field.min_length or 1, max_size=min(field.max_length or 30, 30)).filter(str.strip)
    return plausible


@st.composite
def near_envelopes(draw):
    """An envelope of a declared type for a user the CRM knows (mostly), its schema's required
    properties filled most of the time, plus a few more of any type's."""
    kind = draw(st.sampled_from(sorted(EVENT_TYPES)))
    properties = draw(near_properties)
    for name, field in _serializer_fields(kind).items():
        if (field.required and draw(st.integers(0, 9))) or draw(st.booleans()):
            properties[name] = draw(_valid(field))
    envelope = {"type": kind, "user": draw(near_users), "properties": properties}
    if draw(st.booleans()):
        envelope["occurred_at"] = draw(near_moments)
    if draw(st.booleans()):
        envelope["source"] = draw(st.sampled_from(["app", "crm", "marketing"]))
    return envelope


envelopes = st.one_of(near_envelopes(), near_envelopes(), near_envelopes(), wild_envelopes)
pairs = sorted(APP_EVENT_TYPES)


@st.composite
def near_app_events(draw):
    """Seed 002's body for a mapped pair, its type's required properties filled most of the time."""
    pair = draw(st.sampled_from(pairs))
    payload = draw(near_properties)
    for name, field in _serializer_fields(APP_EVENT_TYPES[pair]).items():
        if field.required and draw(st.integers(0, 9)):
            payload[name] = draw(_valid(field))
    if draw(st.booleans()):
        payload[draw(st.sampled_from(["occurredAt", "timestamp", "date"]))] = draw(
            near_moments | near_moments.map(lambda m: m[:10]) | st.integers(0, 4 * 10**9)
        )
    body = {
        "entityType": pair[0],
        "operation": pair[1],
        "userId": draw(st.sampled_from([KNOWN_ID, KNOWN_ID, "fuzz-new"])),
    }
    if draw(st.booleans()):
        body["externalId"] = draw(st.text(max_size=10))
    return body | {"payload": payload}


wild_app_events = st.fixed_dictionaries(
    {
        "entityType": st.sampled_from([p[0] for p in pairs]) | json_values,
        "operation": st.sampled_from(["create", "update", "delete"]) | json_values,
    },
    optional={"userId": identifiers, "externalId": identifiers, "payload": properties},
)
app_events = st.one_of(near_app_events(), near_app_events(), near_app_events(), wild_app_events)


@pytest.fixture
def app(key_client):
    ContactFactory(email=KNOWN_EMAIL, external_id=KNOWN_ID)
    return key_client(["events:write", "events:sources"])


_examples = itertools.count()


def _key() -> str:
    """A key no earlier example used (keys reused on purpose are other tests' business)."""
    return f"fuzz-{next(_examples)}"


def _settle(before: int, response, accepted: int) -> None:
    """The response is a 202 or a 4xx with a JSON error body; a refused request wrote no row;
    the accepted events' rows all end applied or failed."""
    event(f"answered {response.status_code}, {accepted} accepted")  # --hypothesis-show-statistics
    assert response.status_code < 500, response.content[:500]
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    body = response.json()
    if response.status_code >= 400:
        assert "error" in body, body
        assert InboundEvent.objects.count() == before, body
        return
    assert InboundEvent.objects.count() == before + accepted
    inbox_apply()
    assert not InboundEvent.objects.filter(status=InboundEvent.Status.PENDING).exists()
    # Failed is a verdict on the event (a conflict, a stale schema), never a crash in the applier.
    failures = InboundEvent.objects.filter(status=InboundEvent.Status.FAILED).values_list("result", flat=True)
    assert not [f for f in failures if "Internal error" in str(f)], list(failures)


@FUZZ
@given(envelope=envelopes)
def test_a_single_event_is_answered_202_or_4xx_and_never_left_half_done(app, envelope):
    _post_one(app, "/api/v1/events", envelope)


@FUZZ
@given(batch=st.lists(envelopes, min_size=1, max_size=6), ids=st.data())
def test_a_batch_answers_each_event_and_queues_exactly_the_accepted_ones(app, batch, ids):
    prefix = _key()  # ids repeat within a batch, not across examples
    drawn = [ids.draw(st.sampled_from(["a", "b", "c"]) | json_values) for _ in batch]
    events = [
        {**event, "id": f"{prefix}-{i}" if isinstance(i, str) and i else i}
        for event, i in zip(batch, drawn, strict=True)
    ]
    before = InboundEvent.objects.count()
    response = app.post("/api/v1/events/batch", {"events": events}, format="json")
    results = response.json().get("results", []) if response.status_code == 202 else []
    if response.status_code == 202:
        assert len(results) == len(events)
        assert {r["status"] for r in results} <= {"accepted", "replayed", "rejected"}
    _settle(before, response, sum(r["status"] == "accepted" for r in results))


@FUZZ
@given(body=app_events)
def test_the_seed_app_event_route_is_answered_202_or_4xx(app, body):
    _post_one(app, "/api/crm/webhooks/app-event", body)


def _post_one(app, url: str, body) -> None:
    """POST one event under a fresh Idempotency-Key and check what it left."""
    before = InboundEvent.objects.count()
    response = app.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=_key())
    _settle(before, response, int(response.status_code == 202))
