import json
import logging
import re

import pytest

from crm_platform.logging import RequestIdFilter, request_id_var


def test_json_lines_carry_the_request_id():
    from pythonjsonlogger.json import JsonFormatter

    formatter = JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )
    record = logging.LogRecord("crm", logging.INFO, __file__, 1, "hello", None, None)
    token = request_id_var.set("rid-42")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    line = json.loads(formatter.format(record))
    assert line["request_id"] == "rid-42" and line["message"] == "hello" and line["level"] == "INFO"


@pytest.mark.integration
def test_production_mode_logs_json_lines():
    import subprocess

    from tests.support import PYTHON_BIN, ROOT, django_env

    env = django_env(
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="k" * 60,
        DJANGO_ALLOWED_HOSTS="crm.example.com",
        FIELD_ENCRYPTION_KEYS="Xb0l5qJm1e6rV8q2d3f4g5h6j7k8l9m0n1p2q3r4s5t=",
        FIELD_HMAC_KEY="h" * 40,
    )
    code = "import logging; logging.getLogger('crm.test').warning('structured %s', 'line')"
    result = subprocess.run(
        [str(PYTHON_BIN / "python"), "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "structured line" and line["level"] == "WARNING" and line["logger"] == "crm.test"
    assert line["request_id"] == "-"


@pytest.mark.django_db
def test_access_log_has_request_id_and_no_secrets_or_bodies(key_client, make_key, caplog):
    _, raw = make_key()
    client = key_client()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    with caplog.at_level(logging.DEBUG):
        client.post(
            "/api/v1/me?token=secret-query", {"password": "hunter2-body"}, format="json", HTTP_X_REQUEST_ID="rq-9"
        )
    access = [r for r in caplog.records if r.name == "crm_platform.request"]
    assert access and access[0].request_id == "rq-9" and access[0].status == 405
    # The text line (LOG_JSON=false) carries the duration too, not only the JSON extras.
    assert re.fullmatch(r"POST /api/v1/me 405 \d+(\.\d)?ms", access[0].getMessage())
    assert access[0].duration_ms == float(access[0].getMessage().split()[-1].removesuffix("ms"))
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in (raw, "secret-query", "hunter2-body"):
        assert secret not in text


@pytest.mark.django_db
def test_access_log_names_no_person_in_a_path(key_client, caplog):
    """Seed 003's lead routes carry an email in the path and seed 002's user routes an app user
    id; a log line is out of erasure's reach, so the line names the parameter instead."""
    client = key_client(["contacts:read", "gdpr:write", "audit:read"])
    with caplog.at_level(logging.INFO):
        client.get("/api/integrations/crm/leads/ann.hidden@example.com")
        client.get("/api/integrations/crm/leads/ann.hidden@example.com/activities")
        client.get("/api/crm/audit-log/app-user-hidden-7")
        client.delete("/api/crm/users/app-user-hidden-7")
    access = [r.getMessage().rsplit(" ", 2)[0] for r in caplog.records if r.name == "crm_platform.request"]
    assert access == [
        "GET /api/integrations/crm/leads/<email>",
        "GET /api/integrations/crm/leads/<email>/activities",
        "GET /api/crm/audit-log/<user_id>",
        "DELETE /api/crm/users/<user_id>",
    ]
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "ann.hidden" not in text and "app-user-hidden-7" not in text


@pytest.mark.django_db
def test_djangos_error_line_names_no_person_in_a_path_with_a_non_ascii_character(key_client, system_actor, caplog):
    """django.request writes a 5xx's path unicode-escaped: an IDN email (b\\xfccher.de) was no
    longer the request's path, so the filter left it in the line. (A 500 here: a lead whose
    persona no key decrypts.)"""
    from django.db import connection

    from leads.services import lead_capture

    lead = lead_capture(actor=system_actor, source="assessment", email="ann.hidden@bücher.de", persona="Explorer")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE leads_lead SET persona = 'not a fernet token' WHERE id = %s", [lead.pk])
    client = key_client(["leads:read", "phi:read"])
    client.raise_request_exception = False
    with caplog.at_level(logging.INFO):
        assert client.get("/api/integrations/crm/leads/ann.hidden@bücher.de").status_code == 500
    django_line = next(r for r in caplog.records if r.name == "django.request")
    assert django_line.getMessage() == "Internal Server Error: /api/integrations/crm/leads/<email>"
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "ann.hidden" not in text
