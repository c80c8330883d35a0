"""One JSON error shape for every 4xx/5xx, and the request id."""

import logging

import pytest

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.urls")]


def assert_error_shape(response, status, code=None):
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def test_malformed_json_is_400(key_client):
    response = key_client(["contacts:write"]).post("/t/echo", "{not json", content_type="application/json")
    assert_error_shape(response, 400, "parse_error")


def test_validation_errors_name_the_fields(key_client):
    response = key_client(["contacts:write"]).post("/t/echo", {"email": "nope", "age": -1}, format="json")
    error = assert_error_shape(response, 400, "validation_error")
    assert set(error["fields"]) == {"email", "age"}


def test_wrong_content_type_is_415(key_client):
    response = key_client(["contacts:write"]).post(
        "/t/echo", "email=a", content_type="application/x-www-form-urlencoded"
    )
    assert_error_shape(response, 415)


def test_django_404_is_json(client):
    assert_error_shape(client.get("/api/v1/no-such-thing"), 404, "not_found")
    assert_error_shape(client.get("/nowhere"), 404, "not_found")


def test_method_not_allowed_is_json(key_client):
    response = key_client().delete("/api/v1/me")
    assert_error_shape(response, 405, "method_not_allowed")


def test_django_view_method_not_allowed_is_json(client):
    response = client.post("/healthz")
    assert_error_shape(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET"


def test_unhandled_exception_is_json_500_and_logged_with_request_id(key_client, caplog):
    client = key_client()
    client.raise_request_exception = False
    with caplog.at_level(logging.ERROR):
        response = client.get("/t/boom", HTTP_X_REQUEST_ID="req-boom-1")
    error = assert_error_shape(response, 500, "server_error")
    assert "boom" not in error["message"]
    assert response["X-Request-ID"] == "req-boom-1"
    record = next(r for r in caplog.records if r.name == "crm_platform.request" and r.levelno == logging.ERROR)
    assert record.request_id == "req-boom-1"


def test_request_id_is_echoed_or_made(client):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc-123").headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz", HTTP_X_REQUEST_ID="bad id with spaces\n").headers["X-Request-ID"]
    assert made != "bad id with spaces\n" and len(made) == 32


def test_admin_pages_keep_html_errors(admin_client):
    response = admin_client.get("/admin/no-such-app/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_service_conflict_is_409_naming_what_conflicts(key_client):
    response = key_client(["contacts:write"]).post("/t/domain-error", {"kind": "conflict"}, format="json")
    error = assert_error_shape(response, 409, "conflict")
    assert error["fields"] == {"contacts": [1, 2]}


def test_service_validation_error_is_400_with_fields(key_client):
    response = key_client(["contacts:write"]).post("/t/domain-error", {"kind": "invalid"}, format="json")
    error = assert_error_shape(response, 400, "validation_error")
    assert error["fields"] == {"email": ["Already taken."]}


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/audit?object=contacts.contact:%00",
        "/api/v1/audit?action=%00",
        "/api/v1/audit?actor=user:%00",
        "/api/v1/audit?%00=1",
        "/api/crm/audit-log/%00",
        "/api/v1/contacts?q=%00",
        "/api/v1/contacts/1%00",
    ],
)
def test_a_nul_in_the_url_is_a_json_400(key_client, url):
    """PostgreSQL refuses NUL in text: these went into .filter() and answered 500 (a review)."""
    response = key_client(["admin", "audit:read"]).get(url)
    assert response.status_code == 400 and "NUL" in response.json()["error"]["message"]


def test_a_nul_in_an_admin_url_is_a_400(admin_client):
    assert admin_client.get("/admin/contacts/contact/?q=%00").status_code == 400


def test_an_audit_since_with_an_offset_postgresql_refuses_is_read_in_utc(key_client):
    reader = key_client(["audit:read"])
    assert reader.get("/api/v1/audit", {"since": "2026-01-01T00:00:00-23:00"}).status_code == 200
    response = reader.get("/api/v1/audit", {"since": "9999-12-31T23:59:59-23:00"})
    assert response.status_code == 400 and "since" in response.json()["error"]["fields"]


@pytest.mark.parametrize("path", ["/api/v1/me", "/api/v1/contacts"])
def test_a_host_we_do_not_serve_is_a_json_400(key_client, settings, path):
    """ALLOWED_HOSTS is checked in CommonMiddleware, outside JsonErrorMiddleware: Django's own
    HTML "Bad Request (400)" page answered API clients (a Host header we do not serve, e.g. an
    address instead of the name)."""
    settings.ALLOWED_HOSTS = ["testserver"]
    response = key_client().get(path, HTTP_HOST="10.0.0.7:8000")
    assert_error_shape(response, 400, "bad_request")
    assert response["X-Request-ID"]


def test_a_host_we_do_not_serve_keeps_an_html_400_in_the_admin(client, settings):
    settings.ALLOWED_HOSTS = ["testserver"]
    response = client.get("/admin/login/", HTTP_HOST="10.0.0.7:8000")
    assert response.status_code == 400 and response["Content-Type"].startswith("text/html")
