"""The published OpenAPI document against what the API really answers.

Every operation declares the error statuses it can return, each with the one `Error` body
(crm_platform/api/errors.py), the Idempotency-Key header where the view honours it and
Retry-After on 429; and real responses, successes and errors, through HTTP, match the
operation's documented status, body schema and headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from django.test import override_settings
from drf_spectacular.generators import EndpointEnumerator
from jsonschema import Draft202012Validator, FormatChecker

from compliance.gdpr import legal_hold_place
from compliance.tasks import export_build
from contacts.models import Subscription
from contacts.tests.factories import ContactFactory
from crm_platform.api.errors import error_body
from crm_platform.idempotency import key_use
from integrations.tasks import inbox_apply

pytestmark = pytest.mark.django_db

_SCHEMA: dict = {}


@pytest.fixture
def schema(client) -> dict:
    if not _SCHEMA:  # the document depends on the code only: generated once per run
        response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
        assert response.status_code == 200
        _SCHEMA.update(response.json())
    return _SCHEMA


def _operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("get", "put", "post", "patch", "delete"):
                yield path, method, operation


def _json_schema(node, *, strict: bool):
    """OpenAPI 3.0 -> JSON Schema: `nullable` as a null alternative; `strict`: an object that
    lists its properties has no others (what a route answers beyond its documentation fails)."""
    if isinstance(node, list):
        return [_json_schema(item, strict=strict) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "nullable":
            continue
        if key == "properties":
            out[key] = {name: _json_schema(sub, strict=strict) for name, sub in value.items()}
        else:
            out[key] = _json_schema(value, strict=strict)
    if strict and "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") else out


def _validate(schema: dict, body_schema: dict, instance) -> None:
    root = {
        **_json_schema(body_schema, strict=True),
        "components": {"schemas": _json_schema(schema["components"]["schemas"], strict=True)},
    }
    errors = sorted(Draft202012Validator(root, format_checker=FormatChecker()).iter_errors(instance), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def conforms(schema: dict, method: str, path: str, response) -> dict | bytes | None:
    """Assert the response is documented: its status, its body's schema, its headers."""
    operation = schema["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], (
        f"{method} {path} answered {status}, documents {sorted(operation['responses'])}: {response.content[:300]}"
    )
    documented = operation["responses"][status]
    for name, header in documented.get("headers", {}).items():
        if header.get("required"):
            assert name in response, f"{method} {path} {status} lacks its header {name}"
        if name in response:
            value = response[name]
            value = int(value) if header["schema"].get("type") == "integer" else value
            _validate(schema, header["schema"], value)
    if "Idempotent-Replayed" in response:
        assert "Idempotent-Replayed" in documented.get("headers", {}), f"{method} {path} {status}"
    if response.status_code == 204:
        assert "content" not in documented and not response.content
        return None
    media_type = response["Content-Type"].split(";")[0]
    assert media_type in documented.get("content", {}), f"{method} {path} {status} answered {media_type}"
    if media_type != "application/json":
        return response.content
    body = json.loads(response.content)
    _validate(schema, documented["content"][media_type]["schema"], body)
    return body


# ----------------------------------------------------------------------------- the document


def test_error_component_is_the_shape_errors_have(schema):
    error = schema["components"]["schemas"]["Error"]
    shape = error_body("code", "message", {"field": ["message"]})
    assert error["required"] == list(shape) and error["additionalProperties"] is False
    inner = error["properties"]["error"]
    assert set(inner["properties"]) == set(inner["required"]) == set(shape["error"])
    assert inner["additionalProperties"] is False
    _validate(schema, {"$ref": "#/components/schemas/Error"}, shape)


def test_every_operation_declares_the_errors_it_can_return(schema):
    checked = 0
    for path, method, operation in _operations(schema):
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        parameters = {(p["in"], p["name"]): p for p in operation.get("parameters", [])}
        for status, response in responses.items():
            if status.startswith("4"):
                assert response["content"] == {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                }, f"{where} {status}: not the Error body"
        assert "405" not in responses, where
        assert "429" in responses, f"{where}: every route is throttled"
        assert responses["429"]["headers"]["Retry-After"]["required"], where
        if operation.get("security") != []:
            assert {"401", "403"} <= set(responses), f"{where}: an authenticated route"
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= set(responses), f"{where}: takes a body"
        if any(location == "query" for location, _ in parameters):
            assert "400" in responses, f"{where}: takes query parameters"
        if any(location == "path" for location, _ in parameters):
            assert "404" in responses, f"{where}: a path id"
        if ("header", "Idempotency-Key") in parameters:
            assert {"400", "413", "422"} <= set(responses), f"{where}: honours Idempotency-Key"
            for status, response in responses.items():
                if status.startswith("2"):
                    assert "Idempotent-Replayed" in response["headers"], f"{where} {status}"
        for status, response in responses.items():
            if status.startswith("2") and status != "204":
                assert response.get("content"), f"{where} {status}: a success without a schema"
        checked += 1
    assert checked >= 70


def test_idempotency_key_is_documented_exactly_where_a_view_honours_it(schema):
    honoured = set()
    for path, _regex, method, callback in EndpointEnumerator().get_api_endpoints():
        if path in ("/api/schema/", "/api/docs/", "/api/redoc/"):
            continue  # the document and its pages, not in it
        use = key_use(getattr(callback.cls, method.lower(), None))
        documented = schema["paths"][path.replace("{pk}", "{id}")][method.lower()]
        header = next((p for p in documented.get("parameters", []) if p["name"] == "Idempotency-Key"), None)
        assert (header is not None) == (use is not None), f"{method} {path}"
        if use is not None:
            honoured.add((method, path))
            assert header["in"] == "header" and header.get("required", False) is use.required, f"{method} {path}"
            assert ("409" in documented["responses"]) >= use.in_flight_conflict, f"{method} {path}"
    assert ("POST", "/api/v1/events") in honoured and ("POST", "/api/v1/contacts") in honoured
    assert len(honoured) >= 20


@pytest.mark.parametrize(
    ("method", "path", "errors"),
    [
        ("post", "/api/v1/contacts", {400, 401, 403, 409, 413, 415, 422, 429}),
        ("get", "/api/v1/contacts", {400, 401, 403, 429}),
        ("get", "/api/v1/contacts/{id}", {401, 403, 404, 429}),
        ("patch", "/api/v1/contacts/{id}", {400, 401, 403, 404, 409, 413, 415, 429}),
        ("post", "/api/v1/contacts/{id}/erase", {400, 401, 403, 404, 409, 413, 422, 429}),
        ("post", "/api/v1/events", {400, 401, 403, 409, 413, 415, 422, 429}),
        ("post", "/api/v1/events/batch", {400, 401, 403, 413, 415, 429}),
        ("get", "/api/v1/me", {401, 403, 429}),
        ("get", "/api/v1/exports/download/{token}", {400, 401, 403, 404, 409, 410, 429}),
        ("post", "/api/integrations/hubspot/webhooks", {400, 401, 413, 429}),
    ],
)
def test_operations_keep_their_error_responses(schema, method, path, errors):
    responses = schema["paths"][path][method]["responses"]
    assert {int(status) for status in responses if status >= "400"} == errors


def test_a_route_signed_by_its_provider_needs_no_api_key(schema):
    assert schema["paths"]["/api/integrations/hubspot/webhooks"]["post"]["security"] == []
    assert schema["paths"]["/api/v1/contacts"]["get"]["security"] == [{"ApiKey": []}]


# ----------------------------------------------------------------------------- real answers: successes


@pytest.fixture
def privacy(key_client):
    return key_client(["contacts:read", "consents:write", "gdpr:write", "phi:read", "audit:read"])


def test_privacy_routes_answer_as_documented(schema, privacy, django_capture_on_commit_callbacks):
    contact = ContactFactory(external_id="app-77")
    base = f"/api/v1/contacts/{contact.pk}"

    conforms(schema, "GET", "/api/v1/contacts/{id}/consents", privacy.get(f"{base}/consents"))
    decisions = {"consents": [{"purpose": "marketing_email", "granted": True, "source": "form", "ip": "10.0.0.1"}]}
    body = conforms(
        schema, "PUT", "/api/v1/contacts/{id}/consents", privacy.put(f"{base}/consents", decisions, format="json")
    )
    assert body["consents"] and body["history"]

    assert (
        conforms(schema, "GET", "/api/v1/contacts/{id}/restriction", privacy.get(f"{base}/restriction"))["restriction"]
        is None
    )
    restricted = privacy.put(f"{base}/restriction", {"reason": "disputed"}, format="json")
    assert conforms(schema, "PUT", "/api/v1/contacts/{id}/restriction", restricted)["restricted"] is True
    conforms(schema, "GET", "/api/v1/contacts/{id}/restriction", privacy.get(f"{base}/restriction"))
    lifted = privacy.delete(f"{base}/restriction")
    assert conforms(schema, "DELETE", "/api/v1/contacts/{id}/restriction", lifted)["restriction"]["active"] is False

    log = privacy.get("/api/crm/audit-log/app-77", {"limit": 5})
    assert conforms(schema, "GET", "/api/crm/audit-log/{user_id}", log)["data"]

    with django_capture_on_commit_callbacks():
        started = privacy.post(f"{base}/export")
    bundle = conforms(schema, "POST", "/api/v1/contacts/{id}/export", started)
    pending = conforms(schema, "GET", "/api/v1/exports/{bundle_id}", privacy.get(f"/api/v1/exports/{bundle['id']}"))
    assert pending["status"] == "pending"
    assert export_build.apply(args=[bundle["id"]]).get() == "ready"
    ready = conforms(schema, "GET", "/api/v1/exports/{bundle_id}", privacy.get(f"/api/v1/exports/{bundle['id']}"))
    zipped = conforms(schema, "GET", "/api/v1/exports/download/{token}", privacy.get(ready["download_url"]))
    assert zipped[:2] == b"PK"

    first = privacy.post(f"{base}/erase", HTTP_IDEMPOTENCY_KEY="erase-77")
    assert conforms(schema, "POST", "/api/v1/contacts/{id}/erase", first)["status"] == "erased"
    again = privacy.post(f"{base}/erase", HTTP_IDEMPOTENCY_KEY="erase-77")
    assert again["Idempotent-Replayed"] == "true"
    conforms(schema, "POST", "/api/v1/contacts/{id}/erase", again)

    ContactFactory(external_id="app-78")
    erased = conforms(schema, "DELETE", "/api/crm/users/{user_id}", privacy.delete("/api/crm/users/app-78"))
    assert erased["result"]["status"] == "erased"


def test_event_routes_answer_as_documented(schema, key_client):
    app = key_client(["events:write", "events:read"])
    ContactFactory(email=None, external_id="u-2")
    sign_up = {"type": "account_created", "user": {"external_id": "u-1"}}
    queued = app.post("/api/v1/events", sign_up, format="json", HTTP_IDEMPOTENCY_KEY="e-1")
    event = conforms(schema, "POST", "/api/v1/events", queued)["event"]["id"]
    replay = app.post("/api/v1/events", sign_up, format="json", HTTP_IDEMPOTENCY_KEY="e-1")
    assert replay["Idempotent-Replayed"] == "true"
    conforms(schema, "POST", "/api/v1/events", replay)
    Subscription.objects.create(contact=ContactFactory(), plan="Core", external_id="x")  # another user's
    doomed = {"type": "subscription_cancelled", "user": {"external_id": "u-2"}, "properties": {"subscription_id": "x"}}
    failing = conforms(
        schema, "POST", "/api/v1/events", app.post("/api/v1/events", doomed, format="json", HTTP_IDEMPOTENCY_KEY="e-2")
    )["event"]["id"]
    app_event = {"entityType": "food_log", "operation": "create", "userId": "u-1", "payload": {"kcal": 120}}
    seeded = app.post("/api/crm/webhooks/app-event", app_event, format="json", HTTP_IDEMPOTENCY_KEY="e-3")
    conforms(schema, "POST", "/api/crm/webhooks/app-event", seeded)

    assert conforms(schema, "GET", "/api/v1/events/{id}", app.get(f"/api/v1/events/{event}"))["status"] == "queued"
    inbox_apply()
    assert conforms(schema, "GET", "/api/v1/events/{id}", app.get(f"/api/v1/events/{event}"))["status"] == "applied"
    assert conforms(schema, "GET", "/api/v1/events/{id}", app.get(f"/api/v1/events/{failing}"))["status"] == "failed"

    batch = {
        "events": [
            {"id": "b-1", "type": "user_logged_in", "user": {"external_id": "u-1"}},
            {"id": "b-1", "type": "user_logged_in", "user": {"external_id": "u-1"}},
            {"id": "b-2", "type": "no_such_type", "user": {"external_id": "u-1"}},
            {"id": 7, "type": "user_logged_in"},
        ]
    }
    results = conforms(schema, "POST", "/api/v1/events/batch", app.post("/api/v1/events/batch", batch, format="json"))
    assert [r["status"] for r in results["results"]] == ["accepted", "replayed", "rejected", "rejected"]


def test_hubspot_webhook_answers_as_documented(schema, client, settings):
    settings.HUBSPOT_CLIENT_SECRET = "hubspot-secret"
    path = "/api/integrations/hubspot/webhooks"
    raw = json.dumps([{"subscriptionType": "contact.propertyChange", "objectId": 1}]).encode()
    timestamp = str(int(time.time() * 1000))
    signed = b"POST" + f"http://testserver{path}".encode() + raw + timestamp.encode()
    signature = base64.b64encode(hmac.new(b"hubspot-secret", signed, hashlib.sha256).digest()).decode()
    headers = {"HTTP_X_HUBSPOT_SIGNATURE_V3": signature, "HTTP_X_HUBSPOT_REQUEST_TIMESTAMP": timestamp}
    answered = client.post(path, raw, content_type="application/json", **headers)
    assert conforms(schema, "POST", path, answered)["ignored"] == 1
    conforms(schema, "POST", path, client.post(path, raw, content_type="application/json"))  # unsigned: 401


# ----------------------------------------------------------------------------- real answers: errors


def test_error_answers_are_documented_with_their_body(schema, client, key_client, system_actor, settings):
    writer = key_client(["contacts:read", "contacts:write", "gdpr:write"])
    taken = ContactFactory(email="taken@example.com")
    contact = ContactFactory(email="mine@example.com", external_id="held-1")

    checks = [
        (401, "GET", "/api/v1/contacts", client.get("/api/v1/contacts")),
        (403, "GET", "/api/v1/audit", writer.get("/api/v1/audit")),
        (404, "GET", "/api/v1/contacts/{id}", writer.get("/api/v1/contacts/999999999")),
        (400, "GET", "/api/v1/contacts", writer.get("/api/v1/contacts", {"cursor": "not-a-cursor"})),
        (400, "GET", "/api/v1/contacts", writer.get("/api/v1/contacts", {"updated_since": "yesterday"})),
        (400, "POST", "/api/v1/contacts", writer.post("/api/v1/contacts", {"email": "nope"}, format="json")),
        (400, "POST", "/api/v1/contacts", writer.post("/api/v1/contacts", {}, HTTP_IDEMPOTENCY_KEY="a b")),
        (415, "POST", "/api/v1/contacts", writer.post("/api/v1/contacts", "email=x", content_type="text/plain")),
        (
            409,
            "PATCH",
            "/api/v1/contacts/{id}",
            writer.patch(f"/api/v1/contacts/{contact.pk}", {"email": taken.email}, format="json"),
        ),
    ]
    first = writer.post("/api/v1/contacts", {"email": "new@example.com"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201
    reused = writer.post("/api/v1/contacts", {"email": "other@example.com"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    checks.append((422, "POST", "/api/v1/contacts", reused))
    legal_hold_place(contact=contact, reason="case 12", actor=system_actor)
    checks.append((409, "DELETE", "/api/crm/users/{user_id}", writer.delete("/api/crm/users/held-1")))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    big = {"email": "big@example.com", "first_name": "x" * 2000}
    checks.append((413, "POST", "/api/v1/contacts", writer.post("/api/v1/contacts", big, format="json")))
    with override_settings(
        REST_FRAMEWORK={
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "api_key": "1/min"},
        }
    ):
        limited = key_client(["contacts:read"])
        limited.get("/api/v1/me")
        checks.append((429, "GET", "/api/v1/me", limited.get("/api/v1/me")))

    for status, method, path, response in checks:
        assert response.status_code == status, (method, path, response.status_code, response.content[:300])
        conforms(schema, method, path, response)
