import os

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from crm_platform.actor import Actor
from crm_platform.celery import app as celery_app
from crm_platform.redis import get_redis
from crm_platform.services import api_key_create


def _worker_redis_url() -> str:
    """Each xdist worker gets its own Redis database, so flushing it disturbs nobody else."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    # Two suites on one Redis (two checkouts, say) keep apart with TEST_REDIS_DB_OFFSET.
    offset = int(os.environ.get("TEST_REDIS_DB_OFFSET", "1"))
    index = (offset + int(worker.removeprefix("gw") or 0)) % 16
    base = settings.REDIS_URL.rsplit("/", 1)[0]
    return f"{base}/{index}"


@pytest.fixture(scope="session", autouse=True)
def _isolated_redis():
    url = _worker_redis_url()
    caches = {"default": {**settings.CACHES["default"], "LOCATION": url}}
    # A fast hasher: the suite logs staff in often, and PBKDF2's cost protects nothing here.
    hashers = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Static assets from the app folders, as in development: the suite does not run collectstatic.
    static = {"WHITENOISE_USE_FINDERS": True, "WHITENOISE_AUTOREFRESH": True}
    # Celery too: tasks sent by tests, and the workers they start, use this worker's database.
    celery_app.conf.update(broker_url=url, result_backend=url)
    with override_settings(REDIS_URL=url, CACHES=caches, PASSWORD_HASHERS=hashers, **static):
        yield url


@pytest.fixture(autouse=True)
def _fresh_redis(_isolated_redis):
    get_redis().flushdb()
    yield


@pytest.fixture(autouse=True)
def _no_inbox_linger(settings):
    """Tests apply the inbox by calling its task; the linger (a throughput knob) would only add
    a pause to each call."""
    settings.INBOX_APPLY_LINGER_MS = 0


@pytest.fixture
def system_actor():
    return Actor.system("tests")


@pytest.fixture
def make_key(db, system_actor):
    """make_key(scopes=[...], **kwargs) -> (ApiKey, raw key)."""

    def make(scopes=("contacts:read",), name="test key", **kwargs):
        return api_key_create(name=name, scopes=list(scopes), actor=system_actor, **kwargs)

    return make


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def key_client(make_key):
    """key_client(scopes) -> APIClient sending that key."""

    def make(scopes=("contacts:read",), **kwargs):
        _, raw = make_key(scopes, **kwargs)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return client

    return make


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="staffer", email="staffer@example.com", password="a-long-test-password", is_staff=True
    )
