import pytest
import requests
from django.db import connection
from django.test import override_settings

from bench.common import free_port, gunicorn
from tests.support import OwnRedis, django_env


def test_healthz_answers_without_database(client):
    # No django_db mark: touching the database here would raise.
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_a_host_the_site_does_not_serve(client, path):
    """Load balancers and orchestrators probe a node by its address: refused as a host not in
    DJANGO_ALLOWED_HOSTS (400), every node looked down. Found by a review."""
    response = client.get(path, HTTP_HOST="10.0.0.7:8000")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert client.get("/api/v1/contacts", HTTP_HOST="10.0.0.7:8000").status_code == 400  # the site itself is not


@pytest.mark.django_db
def test_readyz_ok(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "migrations": "ok", "redis": "ok"}


@pytest.mark.django_db
def test_readyz_is_503_when_a_migration_is_not_applied(client):
    with connection.cursor() as cursor:  # rolled back with the test
        cursor.execute("DELETE FROM django_migrations WHERE app = 'crm_platform' AND name = '0002_staff_groups'")
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["migrations"] == "pending" and body["pending_migrations"] == 1
    assert body["error"]["code"] == "not_ready" and "migration" in body["error"]["message"]


@pytest.mark.django_db
def test_readyz_is_degraded_not_down_when_redis_stops(client, tmp_path):
    redis = OwnRedis(tmp_path).start()
    try:
        with override_settings(REDIS_URL=redis.url):
            assert client.get("/readyz").json()["redis"] == "ok"
            redis.stop()
            response = client.get("/readyz")
    finally:
        redis.stop()
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "database": "ok", "migrations": "ok", "redis": "down"}


@pytest.mark.integration
def test_real_server_without_postgres_is_not_ready_but_alive():
    env = django_env(DATABASE_URL=f"postgres://nobody:nothing@127.0.0.1:{free_port()}/none")
    with gunicorn(workers=1, settings="crm_platform.settings", env=env) as base:
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
        response = requests.get(base + "/readyz", timeout=10)
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "down" and body["status"] == "unavailable"
    assert body["error"]["message"] == "PostgreSQL does not answer."
    assert "Traceback" not in response.text
