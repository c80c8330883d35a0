from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from compliance.models import AuditEvent
from crm_platform import selectors
from crm_platform.models import ApiKey
from crm_platform.redis import get_redis
from crm_platform.selectors import hash_key
from crm_platform.services import api_key_revoke, api_key_rotate

pytestmark = pytest.mark.django_db


def test_me_returns_the_calling_key(key_client):
    response = key_client(["contacts:read", "events:write"], name="mobile app").get("/api/v1/me")
    assert response.status_code == 200
    body = response.json()
    assert body["kind"] == "api_key"
    assert body["name"] == "mobile app"
    assert body["scopes"] == ["contacts:read", "events:write"]


def test_only_a_hash_and_prefix_are_stored(make_key):
    key, raw = make_key()
    stored = ApiKey.objects.values().get(pk=key.pk)
    assert raw not in str(stored)
    assert stored["hashed_key"] == hash_key(raw)
    assert raw.startswith(f"crm_{stored['prefix']}_")


def test_missing_key_is_401_with_json_error(api_client):
    response = api_client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer crm_deadbeef_notarealsecret",
        "Bearer nonsense",
        "Bearer",
        "Bearer a b",
        "Bearer crm__x",
        # A NUL in the prefix reached the prefix lookup, which PostgreSQL refused: a 500.
        "Bearer crm_dead\x00beef_notarealsecret",
    ],
)
def test_unknown_or_malformed_key_is_401(api_client, header):
    response = api_client.get("/api/v1/me", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"code", "message", "fields"}


def test_right_prefix_wrong_secret_is_401(api_client, make_key):
    key, raw = make_key()
    forged = f"crm_{key.prefix}_{'x' * 43}"
    assert forged != raw
    response = api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {forged}")
    assert response.status_code == 401


def test_revoked_key_stops_at_once_even_when_cached(
    api_client, make_key, system_actor, django_capture_on_commit_callbacks
):
    key, raw = make_key()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_client.get("/api/v1/me").status_code == 200  # now cached in Redis
    with django_capture_on_commit_callbacks(execute=True):
        api_key_revoke(api_key=key, actor=system_actor)
    assert api_client.get("/api/v1/me").status_code == 401
    assert AuditEvent.objects.filter(action="api_key.revoke", object_id=str(key.pk)).count() == 1


def test_expired_key_is_401(api_client, make_key):
    _, raw = make_key(expires_at=timezone.now() - timedelta(seconds=1))
    assert api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_ip_allow_list(api_client, make_key):
    _, raw = make_key(allowed_ips=["10.1.0.0/16"])
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert api_client.get("/api/v1/me", REMOTE_ADDR="10.1.2.3", **headers).status_code == 200
    assert api_client.get("/api/v1/me", REMOTE_ADDR="10.2.0.1", **headers).status_code == 401


def test_cached_key_request_makes_no_query_and_last_used_is_written_once(
    api_client, make_key, django_assert_num_queries
):
    key, raw = make_key()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_client.get("/api/v1/me").status_code == 200
    first_use = ApiKey.objects.get(pk=key.pk).last_used_at
    assert first_use is not None
    with django_assert_num_queries(0):
        assert api_client.get("/api/v1/me").status_code == 200
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first_use


def test_each_process_remembers_a_verified_key_for_a_few_seconds(api_client, make_key, django_assert_num_queries):
    key, raw = make_key()
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_client.get("/api/v1/me").status_code == 200
    cached = selectors.cache_key_for(key.hashed_key)
    get_redis().delete(cached)
    with django_assert_num_queries(0):  # neither Redis (the entry is gone) nor PostgreSQL
        assert api_client.get("/api/v1/me").status_code == 200
    assert not get_redis().exists(cached)
    _, data = selectors._local[key.hashed_key]
    selectors._local[key.hashed_key] = (0.0, data)  # the seconds are up
    assert api_client.get("/api/v1/me").status_code == 200
    assert get_redis().exists(cached)  # verified again and cached again
    selectors._local.clear()  # another process: Redis has the key, this process learns it from there
    for _ in range(2):
        with django_assert_num_queries(0):
            assert api_client.get("/api/v1/me").status_code == 200


def test_each_request_gets_its_own_copy_of_a_remembered_key(make_key):
    key, raw = make_key()
    selectors._local.clear()
    first = selectors.api_key_verify(raw_key=raw, ip="127.0.0.1")  # verified, remembered
    first.scopes.append("admin")
    first.name = "changed"
    for _ in range(2):  # from this process's memory, then (forgotten here) from Redis
        again = selectors.api_key_verify(raw_key=raw, ip="127.0.0.1")
        assert again is not first and again.pk == key.pk
        assert again.scopes == key.scopes and "admin" not in again.scopes and again.name == key.name
        again.scopes.append("admin")
        selectors._local.clear()


def test_last_used_is_written_again_after_a_minute(make_key):
    from crm_platform.selectors import api_key_verify

    key, raw = make_key()
    start = timezone.now()
    api_key_verify(raw_key=raw, ip=None, now=start)
    api_key_verify(raw_key=raw, ip=None, now=start + timedelta(seconds=30))
    assert ApiKey.objects.get(pk=key.pk).last_used_at == start
    api_key_verify(raw_key=raw, ip=None, now=start + timedelta(seconds=61))
    assert ApiKey.objects.get(pk=key.pk).last_used_at == start + timedelta(seconds=61)


def test_rotation_overlaps_then_old_key_stops(api_client, make_key, system_actor, django_capture_on_commit_callbacks):
    old, old_raw = make_key(["contacts:read", "leads:write"])
    with django_capture_on_commit_callbacks(execute=True):
        new, new_raw = api_key_rotate(api_key=old, actor=system_actor, overlap=timedelta(hours=1))
    assert new.scopes == old.scopes and new.rotated_from_id == old.pk
    for raw in (old_raw, new_raw):
        assert api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    # The overlap ends.
    ApiKey.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    # The cached verification would otherwise live up to API_KEY_CACHE_SECONDS (Redis) and
    # API_KEY_LOCAL_CACHE_SECONDS (this process).
    get_redis().flushdb()
    selectors._local.clear()
    assert api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {old_raw}").status_code == 401
    assert api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {new_raw}").status_code == 200


def test_a_key_cannot_be_rotated_twice(make_key, system_actor):
    from django.core.exceptions import ValidationError

    old, _ = make_key()
    api_key_rotate(api_key=old, actor=system_actor, overlap=timedelta(hours=1))
    with pytest.raises(ValidationError):
        api_key_rotate(api_key=old, actor=system_actor, overlap=timedelta(hours=1))


def test_create_api_key_command_prints_the_key_once(capsys, api_client):
    call_command("create_api_key", "--name", "warehouse", "--scopes", "contacts:read,audit:read")
    out, err = capsys.readouterr()
    raw = out.strip()
    assert "shown once" in err
    key = ApiKey.objects.get(name="warehouse")
    assert key.hashed_key == hash_key(raw) and key.scopes == ["audit:read", "contacts:read"]
    assert api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").json()["name"] == "warehouse"
    audit = AuditEvent.objects.get(action="api_key.create", object_id=str(key.pk))
    assert (audit.actor_kind, audit.actor_id) == ("system", "manage.py create_api_key")


def test_create_api_key_command_refuses_unknown_scope():
    with pytest.raises(CommandError, match="Unknown scope"):
        call_command("create_api_key", "--name", "x", "--scopes", "contacts:read,everything")
    assert not ApiKey.objects.exists()


def test_create_api_key_command_refuses_bad_ip():
    with pytest.raises(CommandError, match="allowed_ips"):
        call_command("create_api_key", "--name", "x", "--scopes", "contacts:read", "--allowed-ips", "not-an-ip")


@pytest.mark.parametrize("days", ["0", "-3", "99999999999"])
def test_create_api_key_command_refuses_an_expiry_it_cannot_honour(days):
    """0 made a key that never expires, -3 one that had already expired (exit 0, key printed),
    a huge number an OverflowError traceback."""
    with pytest.raises(CommandError, match="--expires-days must be between 1 and"):
        call_command("create_api_key", "--name", "x", "--scopes", "contacts:read", "--expires-days", days)
    assert not ApiKey.objects.exists()


def test_create_api_key_command_keeps_an_expiry_of_one_day(capsys):
    call_command("create_api_key", "--name", "day", "--scopes", "contacts:read", "--expires-days", "1")
    key = ApiKey.objects.get(name="day")
    assert timedelta(hours=23) < key.expires_at - timezone.now() <= timedelta(days=1)


def test_create_api_key_command_refuses_a_name_too_long_without_a_traceback():
    """A 150-character name was a DataError traceback from PostgreSQL."""
    with pytest.raises(CommandError, match="name: A key's name has at most 100 characters"):
        call_command("create_api_key", "--name", "n" * 150, "--scopes", "contacts:read")
    assert not ApiKey.objects.exists()


def test_a_stale_writer_cannot_put_a_revoked_key_back_in_the_cache(api_client, make_key, system_actor):
    """A request that loaded the row before the revocation tries to cache it afterwards."""
    from crm_platform.selectors import _remember, api_key_forget

    key, raw = make_key()
    stale_copy = ApiKey.objects.get(pk=key.pk)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    api_key_forget(key.hashed_key)  # what the revocation does on commit
    _remember(stale_copy)  # the late writer
    assert api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
