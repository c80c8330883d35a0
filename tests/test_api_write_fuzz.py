"""Property-based: every API operation that takes a body (POST, PUT, PATCH under /api/v1/ and
the seed aliases under /api/crm/ and /api/integrations/), sent malformed input, answers a 2xx
or a 4xx with a JSON error body, never a 500, and a refusal leaves no audit row behind (nothing
half written).

The operations come from the OpenAPI schema, checked against the URL resolver, so a new write
route is fuzzed without anyone listing it here. Each operation is sent, in turn:

- bodies that are no JSON object: other JSON values, broken or too deeply nested JSON, a body
  over the size limit, other content types;
- a sweep: a right body with one field (nested ones too) set to each of the edges of its
  declared type that have reached a database or a renderer before: integers past 32 and 64
  bits, a number past a double (1e400), NUL and lone surrogates, impossible or out-of-range
  moments, very long strings;
- drawn bodies, mostly right but for one field that is missing, at an edge or of any other
  JSON type (nested lists and dicts, null...), sometimes wrong in several fields at once, with
  a path parameter that is a real object's id or nonsense."""

from __future__ import annotations

import itertools
import json
import re
from urllib.parse import quote

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from compliance.models import AuditEvent
from crm_platform.api.scopes import SCOPES
from integrations.events import EVENT_TYPES as WEBHOOK_EVENT_TYPES
from integrations.inbound import EVENT_TYPES as INBOUND_EVENT_TYPES
from leads.models import Pipeline
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db
FUZZ = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
BODY_METHODS = ("post", "put", "patch")

SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
OPERATIONS = sorted(
    (method.upper(), path, operation)
    for path, item in SCHEMA["paths"].items()
    for method, operation in item.items()
    if method in BODY_METHODS
)
# The bulk upsert declares its rows as any JSON; each is a contact's fields, checked by the service.
BULK_ROW = SCHEMA["components"]["schemas"]["ContactCreateInputRequest"]


# ----------------------------------------------------------------------------- the schema


def _resolved(schema: dict) -> dict:
    while "$ref" in schema:
        schema = SCHEMA["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _enum(schema: dict) -> list:
    """The members of an enum property (spectacular puts them behind $ref, allOf or oneOf)."""
    schema = _resolved(schema)
    if "enum" in schema:
        return [value for value in schema["enum"] if value not in (None, "")] or schema["enum"]
    for key in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(key, ()):
            if members := _enum(sub):
                return members
    return []


def _request_schema(operation: dict) -> dict:
    content = (operation.get("requestBody") or {}).get("content", {})
    return _resolved(content["application/json"]["schema"]) if "application/json" in content else {}


def _writable(schema: dict) -> dict:
    return {name: prop for name, prop in schema.get("properties", {}).items() if not _resolved(prop).get("readOnly")}


def _items(name: str, schema: dict) -> dict | None:
    """The object schema of an array property's items, when they are objects with fields."""
    schema = _resolved(schema)
    if schema.get("type") != "array":
        return None
    if name == "contacts":
        return BULK_ROW
    items = _resolved(schema.get("items", {}))
    return items if _writable(items) else None


# ----------------------------------------------------------------------------- wrong values

HUGE, MINUS_HUGE = "@@huge@@", "@@minus-huge@@"  # sent as the JSON numbers 1e400 and -1e400

nasty_numbers = st.sampled_from(
    [2**31, 2**63, -(2**31) - 1, 2**64, 2**70, -(2**70), 10**30, -1, 0, 0.5, -0.0, 1e308, HUGE, MINUS_HUGE]
)
nasty_strings = st.sampled_from(
    [
        "\u0000",
        "\ud800",
        "y" * 5000,
        "",
        " ",
        "a\u0000b",
        "\x01\x07\x1b\x7f",
        "ü😀\u200b\u202e",
        "x" * 300,
        "abc",
        "NaN",
        "Infinity",
        "1e400",
        "-1",
        "99999999999999999999999",
        "2024-02-30",
        "9999-12-31T23:59:59-23:59",
        "http://",
        "javascript:alert(1)",
    ]
)
nasty_objects = st.dictionaries(
    st.sampled_from(["a", "", "\u0000", "\ud800"]),
    nasty_numbers | nasty_strings | st.dictionaries(st.just("b"), nasty_strings, min_size=1),
    min_size=1,
    max_size=2,
)
wild_scalars = st.one_of(
    nasty_numbers, nasty_strings, st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()
).filter(lambda v: v not in (float("inf"), float("-inf")))
wild_values = st.one_of(
    wild_scalars,
    wild_scalars,
    st.lists(nasty_numbers | nasty_strings, min_size=1, max_size=2),
    nasty_objects,
    st.recursive(
        wild_scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=6,
    ),
)
plausible_json = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=5,
)


def _edges(schema: dict) -> list:
    """Wrong values at the edges of a property's declared type, those a serializer may let
    through to the database or the renderer first (the sweep sends the first two)."""
    schema = _resolved(schema)
    kind, fmt = schema.get("type"), schema.get("format")
    if _enum(schema):
        return ["\ud800", ["new"], "\u0000", "x" * 300, "", 1]
    if fmt in ("date", "date-time"):
        return [
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+14:00",
            "2024-02-30",
            "2024-05-01T25:00:00Z",
            "9999-12-31",
            "+275760-09-13",
            1714550400,
        ]
    if fmt == "decimal" or kind == "number":
        return [HUGE, "NaN", "1e400", MINUS_HUGE, "-Infinity", 2**70, "9" * 30, "1e-400", -1]
    if kind == "integer":
        return [2**31, HUGE, 2**63, -(2**31) - 1, 2**64, -1, "1", "abc", True, 1.5]
    if kind == "boolean":
        return ["\u0000", [True], "yes", 2]
    if kind == "array":
        return [["\u0000"], [{"a": HUGE}], [["\ud800"]], "\u0000", [[[]]]]
    if kind == "object" or not kind:
        return [{"a": "\u0000"}, {"a": 2**63}, {"a": HUGE}, {"\ud800": 1}, []]
    return ["\u0000", "y" * 5000, "\ud800", " ", "x" * 300]


def _wrong(schema: dict) -> st.SearchStrategy:
    """A wrong value: most often an edge of the property's type, else anything."""
    edges = st.sampled_from(_edges(schema))
    return st.one_of(edges, edges, edges, wild_values)


# ----------------------------------------------------------------------------- right values

_fresh = itertools.count()


def _fresh_email(prefix: str) -> str:
    return f"{prefix}-{next(_fresh)}@example.com"


def _ordinary(name: str, schema: dict, world: dict) -> list | None:
    """Right values for a property of a simple type, the most ordinary first; None for arrays
    and objects."""
    schema = _resolved(schema)
    if members := _enum(schema):
        return members
    named = {
        "contact": world["contacts"],
        "loser": world["contacts"][::-1],
        "company": [world["company"]],
        "pipeline": [world["pipeline"]],
        "owner": [world["owner"], None],
        "stage": world["stages"],
        "url": [world["url"]],
        "type": sorted(INBOUND_EVENT_TYPES),
        "user": [{"external_id": world["external_id"]}, {"email": world["email"]}],
        "secret": ["a-secret-long-enough-to-use", "whsec_" + "A" * 32],
    }
    if name in named:
        return named[name]
    kind, fmt = schema.get("type"), schema.get("format")
    if fmt == "email":
        return [_fresh_email("fuzz"), world["email"]]
    if fmt == "date":
        return ["2024-05-01", "1990-01-31"]
    if fmt == "date-time":
        return ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00+02:00"]
    if fmt in ("ipv4", "ipv6") or name == "ip":
        return ["127.0.0.1", "::1"]
    if fmt == "decimal" or kind == "number":
        return ["12.50", "0", "999.99", 7]
    if kind == "integer":
        low = schema.get("minimum", 0)
        return [max(low, 1), low, min(schema.get("maximum", 1000), 1000)]
    if kind == "boolean":
        return [True, False]
    if kind in ("array", "object") or not kind:
        return None
    return ["ok", "urgent", "Some words"]


def _typical(name: str, schema: dict, world: dict):
    """One right value (the sweep's base)."""
    if (choices := _ordinary(name, schema, world)) is not None:
        return choices[0]
    if (items := _items(name, schema)) is not None:
        return [_base(items, world)]
    if name in ("events", "event_types"):
        return [WEBHOOK_EVENT_TYPES[0]]
    return [] if _resolved(schema).get("type") == "array" else {}


def _base(schema: dict, world: dict) -> dict:
    """A right body with the required fields only (a bulk row: an email too)."""
    body = {
        name: _typical(name, prop, world)
        for name, prop in _writable(schema).items()
        if name in schema.get("required", ())
    }
    return {"email": _fresh_email("bulk"), **body} if schema is BULK_ROW else body


def _valid(name: str, schema: dict, world: dict) -> st.SearchStrategy:
    """A right value of the property's declared type, near what the route accepts."""
    if (choices := _ordinary(name, schema, world)) is not None:
        right = st.sampled_from(choices)
        if _resolved(schema).get("type") != "string" or _resolved(schema).get("format") or name in ("url",):
            return right
        return right | st.text(min_size=1, max_size=20).filter(str.strip)  # free text: any text
    if (items := _items(name, schema)) is not None:
        rows = st.tuples(st.builds(_fresh_email, st.just("bulk")), _bodies(items, world))
        return st.lists(rows.map(lambda row: {"email": row[0], **row[1]} if items is BULK_ROW else row[1]), max_size=3)
    if name in ("events", "event_types"):  # webhook event types (seed 003's names too)
        return st.lists(st.sampled_from([*WEBHOOK_EVENT_TYPES, "lead_captured"]), max_size=3, unique=True)
    if _resolved(schema).get("type") == "array":
        return st.lists(st.text(max_size=10), max_size=3)
    return st.dictionaries(st.text(max_size=8), plausible_json, max_size=3)


@st.composite
def _bodies(draw, schema: dict, world: dict) -> dict:
    """Most often every field right (the required ones, some of the others) but one, which is
    wrong or missing; else each field right, wrong or missing at random; now and then a field
    the schema does not name."""
    fields = _writable(schema)
    required = set(schema.get("required", ()))
    body = {}
    if draw(st.integers(0, 3)):
        wrong = draw(st.sampled_from(sorted(fields)))
        for name, prop in fields.items():
            if name != wrong and (name in required or draw(st.booleans())):
                body[name] = draw(_valid(name, prop, world))
        if draw(st.integers(0, 5)):
            body[wrong] = draw(_wrong(fields[wrong]))
    else:
        for name, prop in fields.items():
            modes = ["valid", "valid", "wild", "omit"] if name in required else ["omit", "valid", "wild"]
            if (mode := draw(st.sampled_from(modes))) != "omit":
                body[name] = draw(_valid(name, prop, world) if mode == "valid" else _wrong(prop))
    if not draw(st.integers(0, 9)):
        body[draw(st.text(max_size=10))] = draw(wild_values)
    return body


def _sweep(schema: dict, world: dict):
    """A right body with one field at one edge of its type, for each field (those of nested
    objects too) and its first two edges."""
    for name, prop in _writable(schema).items():
        for edge in _edges(prop)[:2]:
            yield {**_base(schema, world), name: edge}
        if (items := _items(name, prop)) is not None:
            for row in _sweep(items, world):
                yield {**_base(schema, world), name: [row]}


def _encoded(body) -> bytes:
    text = json.dumps(body)
    return text.replace(f'"{HUGE}"', "1e400").replace(f'"{MINUS_HUGE}"', "-1e400").encode()


# ----------------------------------------------------------------------------- paths

NONSENSE_IDS = ["0", "-1", "abc", "9" * 25, "x" * 3000, "ü😀", "%00", "a%00b", "%ff", "..", " "]


def _kind(path: str, parameter: str) -> str:
    """The kind of object a path parameter names: the collection before it (seed 003's lead
    routes name a lead by its email)."""
    if parameter == "email":
        return "email"
    before = path.split("{" + parameter + "}")[0].rstrip("/").rsplit("/", 1)[-1]
    return {"test": "webhook-endpoints"}.get(before, before)


def _url(path: str, world: dict, value: str | None = None) -> str:
    """The path with its parameter filled: the real object's id, or `value` as given."""
    for parameter in re.findall(r"{(\w+)}", path):
        filled = value if value is not None else quote(str(_made(world, _kind(path, parameter))))
        path = path.replace("{" + parameter + "}", filled)
    return path


def _urls(path: str, world: dict) -> st.SearchStrategy:
    if "{" not in path:
        return st.just(path)
    nonsense = st.sampled_from(NONSENSE_IDS).map(lambda v: _url(path, world, quote(v, safe="%")))
    return st.one_of(st.just(_url(path, world)), st.just(_url(path, world)), nonsense)


# ----------------------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def receiver():
    with WebhookReceiver() as fake:
        yield fake


# How to make an object of each kind a path parameter names, made only for the routes that
# name it (the world's contacts and company serve as relations everywhere).
MAKERS = {
    "contacts": lambda world, post: world["contacts"][0],
    "companies": lambda world, post: world["company"],
    "leads": lambda world, post: post("/api/v1/leads", {"email": world["email"], "source": "api"}),
    "email": lambda world, post: _made(world, "leads") and world["email"],
    "deals": lambda world, post: post("/api/v1/deals", {"name": "D", "contact": world["contacts"][0], "amount": "10"}),
    "tickets": lambda world, post: post("/api/v1/tickets", {"contact": world["contacts"][0], "subject": "Help"}),
    "subscriptions": lambda world, post: post("/api/v1/subscriptions", {"contact": world["contacts"][0], "plan": "b"}),
    "webhook-endpoints": lambda world, post: post("/api/v1/webhook-endpoints", {"url": world["url"]}),
}


def _made(world: dict, kind: str):
    """The id of the world's object of this kind, made through the API the first time."""
    if kind not in world["ids"]:
        world["ids"][kind] = MAKERS[kind](world, world["post"])
    return world["ids"][kind]


@pytest.fixture
def world(make_key, receiver, django_user_model, settings):
    """An API client holding every scope (phi:read too), and real objects made through the
    API, whose ids fill relations and path parameters."""
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_TIMEOUT_SECONDS = 2
    settings.WEBHOOK_RESOLVER = "tests.fakes.dns.resolve"  # no real DNS: only IP literals resolve
    _, raw = make_key(sorted(SCOPES), name="fuzz")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    def post(url: str, body: dict) -> int:
        response = client.post(url, body, format="json")
        assert response.status_code in (200, 201), response.content[:300]
        return response.json()["id"]

    email, external_id = "fuzz-person@example.com", "fuzz-person"
    pipeline = Pipeline.objects.get(is_default=True)
    return {
        "client": client,
        "post": post,
        "contacts": [
            post("/api/v1/contacts", {"email": email, "external_id": external_id, "first_name": "Fuzz"}),
            post("/api/v1/contacts", {"email": "fuzz-other@example.com"}),
        ],
        "company": post("/api/v1/companies", {"name": "Fuzz Inc", "domain": "fuzz.example"}),
        "pipeline": pipeline.pk,
        "owner": django_user_model.objects.create_user(username="fuzz-owner", is_staff=True).pk,
        "stages": [stage.key for stage in pipeline.stages.all()] + [str(pipeline.stages.first().pk)],
        "url": receiver.url,
        "email": email,
        "external_id": external_id,
        "ids": {},
    }


_keys = itertools.count()


def _send(world: dict, method: str, url: str, body: bytes, content_type: str = "application/json") -> None:
    """Send one request under a fresh Idempotency-Key (the event routes need one) and check the
    answer: below 500; a refusal is a JSON error body and wrote no audit row."""
    before = AuditEvent.objects.count()
    response = world["client"].generic(
        method, url, body, content_type=content_type, HTTP_IDEMPOTENCY_KEY=f"fuzz-{next(_keys)}"
    )
    shown = f"{method} {url[:120]} {content_type} {body[:400]!r} -> {response.status_code} {response.content[:300]!r}"
    assert response.status_code < 500, shown
    if response.status_code >= 400:
        assert response["Content-Type"].startswith("application/json"), shown
        assert set(response.json()["error"]) == {"code", "message", "fields"}, shown
        assert AuditEvent.objects.count() == before, shown


NOT_AN_OBJECT = [
    ("application/json", b"[]"),
    ("application/json", b"1e400"),
    ("application/json", b'"text"'),
    ("application/json", b""),
    ("application/json", b'{"name": '),
    ("application/json", b'{"name": NaN}'),
    ("application/json", b"\xff\xfe\x00{"),
    ("application/json", b"[" * 100_000),
    ("application/json", b'{"name": "' + b"x" * 3_000_000 + b'"}'),
    ("application/json; charset=latin-1", b'{"name": "caf\xe9"}'),
    ("text/plain", b'{"name": "x"}'),
    ("application/x-www-form-urlencoded", b"name=x&contact=1&url=http%3A%2F%2F127.0.0.1%2F"),
    ("multipart/form-data; boundary=zz", b'--zz\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--zz--\r\n'),
    ("", b'{"name": "x"}'),
]


# ----------------------------------------------------------------------------- the tests


def _served(patterns, prefix=""):
    """(METHOD, path with {} for each parameter) of every view method that takes a body."""
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _served(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern) and (view := getattr(pattern.callback, "cls", None)):
            for method in set(view.http_method_names) & set(BODY_METHODS):
                if hasattr(view, method):
                    yield method.upper(), "/" + re.sub(r"<[^>]+>", "{}", prefix + str(pattern.pattern))


def test_the_fuzzed_operations_are_every_write_route_served():
    served = {(method, path) for method, path in _served(get_resolver().url_patterns) if path.startswith("/api/")}
    fuzzed = {(method, re.sub(r"{\w+}", "{}", path)) for method, path, _ in OPERATIONS}
    assert served == fuzzed
    assert {path.split("/")[2] for _, path in fuzzed} >= {"v1", "crm", "integrations"}  # seed aliases too


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_a_write_route_answers_malformed_input_with_a_json_4xx_never_a_500(world, method, path, operation):
    url = _url(path, world)
    for content_type, body in NOT_AN_OBJECT:
        _send(world, method, url, body, content_type)
    schema = _request_schema(operation)
    for body in _sweep(schema, world):
        _send(world, method, url, _encoded(body))

    @FUZZ
    @given(url=_urls(path, world), body=_bodies(schema, world) if _writable(schema) else wild_values)
    def drawn(url, body):
        _send(world, method, url, _encoded(body))

    drawn()
