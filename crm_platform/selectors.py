from __future__ import annotations

import copy
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import RedisError

from crm_platform.models import ApiKey
from crm_platform.redis import get_redis

logger = logging.getLogger(__name__)

KEY_PREFIX = "crm_"
LAST_USED_RESOLUTION = timedelta(seconds=60)
_DATETIME_FIELDS = ("expires_at", "revoked_at", "last_used_at")
_CACHED_FIELDS = (
    "id",
    "name",
    "prefix",
    "hashed_key",
    "scopes",
    "allowed_ips",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "lineage",
)


class ApiKeyInvalid(Exception):
    """The presented key is unknown, malformed, revoked, expired, or not allowed from this address."""


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def split_key(raw_key: str) -> str | None:
    """The lookup prefix of a key shaped `crm_<prefix>_<secret>`, or None."""
    if not raw_key.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = raw_key[len(KEY_PREFIX) :].partition("_")
    # Prefixes are hex (services._new_secret): anything else, a NUL above all (which PostgreSQL
    # refuses in a query, a 500), is no key of ours.
    if not sep or not prefix or not secret or len(prefix) > 16 or not (prefix.isascii() and prefix.isalnum()):
        return None
    return prefix


def cache_key_for(hashed_key: str) -> str:
    return f"apikey:v2:{hashed_key}"


def api_key_verify(*, raw_key: str, ip: str | None, now: datetime | None = None) -> ApiKey:
    """The active ApiKey for a presented key, or ApiKeyInvalid.

    One indexed lookup by prefix and one constant-time compare of hashes; the verified row is
    remembered in Redis for API_KEY_CACHE_SECONDS (a revocation clears it) and in this process
    for API_KEY_LOCAL_CACHE_SECONDS. last_used_at is written at most once a minute per key.
    """
    now = now or timezone.now()
    prefix = split_key(raw_key)
    if prefix is None:
        raise ApiKeyInvalid("malformed key")
    hashed = hash_key(raw_key)
    key = _cached(hashed)
    if key is None:
        key = ApiKey.objects.filter(prefix=prefix).only(*_CACHED_FIELDS).first()
        if key is None or not hmac.compare_digest(key.hashed_key, hashed):
            raise ApiKeyInvalid("unknown key")
        _remember(key)
    if not key.is_active_at(now):
        raise ApiKeyInvalid("revoked or expired key")
    if key.allowed_ips and not ip_allowed(ip, key.allowed_ips):
        raise ApiKeyInvalid("key not allowed from this address")
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        _touch(key, now)
    return key


def ip_allowed(ip: str | None, allowed: list[str]) -> bool:
    if ip is None:
        return False
    address = ipaddress.ip_address(ip)
    for entry in allowed:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


# The cache entry of a key that was just changed or revoked holds this marker until it expires:
# a request that loaded the row before the change must not put the old row back in the cache.
_FORGOTTEN = b"forgotten"
# SET only when the entry is not the marker (one atomic step).
_SET_UNLESS_FORGOTTEN = """
if redis.call('GET', KEYS[1]) == ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


# Verified keys are also remembered in this process for API_KEY_LOCAL_CACHE_SECONDS (a Redis
# round trip is a good part of a small request's cost): a revocation is at once in the process
# that made it, and within those seconds everywhere else. The row is kept built, and each
# request gets a shallow copy (building a model instance, with its init signals, cost more
# than the rest of the lookup).
_local: dict[str, tuple[float, ApiKey]] = {}
_LOCAL_MAX = 1000


def _cached(hashed: str) -> ApiKey | None:
    local = _local.get(hashed)
    if local is not None and local[0] > time.monotonic():
        return _copy(local[1])
    try:
        raw = get_redis().get(cache_key_for(hashed))
    except RedisError:  # Redis down: fall back to PostgreSQL, the source of truth
        logger.warning("api key cache unavailable")
        return None
    if raw is None or raw == _FORGOTTEN:
        return None
    key = _key_from(json.loads(raw))
    _remember_locally(hashed, key)
    return _copy(key)


def _copy(key: ApiKey) -> ApiKey:
    """A request's own copy of a remembered key: its lists too, so nothing one request does to
    them reaches another."""
    mine = copy.copy(key)
    mine.scopes, mine.allowed_ips = list(key.scopes), list(key.allowed_ips)
    return mine


def _key_from(data: dict) -> ApiKey:
    data = {**data, "scopes": list(data["scopes"]), "allowed_ips": list(data["allowed_ips"])}
    for field in _DATETIME_FIELDS:
        if data[field] is not None:
            data[field] = datetime.fromisoformat(data[field])
    return ApiKey(**data)


def _remember_locally(hashed: str, key: ApiKey) -> None:
    seconds = settings.API_KEY_LOCAL_CACHE_SECONDS
    if not seconds:
        return
    if len(_local) >= _LOCAL_MAX:
        _local.clear()
    _local[hashed] = (time.monotonic() + seconds, key)


def _remember(key: ApiKey) -> None:
    data = {field: getattr(key, field) for field in _CACHED_FIELDS}
    for field in _DATETIME_FIELDS:
        if data[field] is not None:
            data[field] = data[field].isoformat()
    try:
        stored = get_redis().eval(
            _SET_UNLESS_FORGOTTEN,
            1,
            cache_key_for(key.hashed_key),
            json.dumps(data),
            settings.API_KEY_CACHE_SECONDS,
            _FORGOTTEN,
        )
    except RedisError:
        logger.warning("api key cache unavailable")
        return
    if stored:
        _remember_locally(key.hashed_key, _key_from(data))  # built whole, as from Redis


def api_key_forget(hashed_key: str) -> None:
    """After a key changed or was revoked: its cached verification is replaced by a marker for
    API_KEY_CACHE_SECONDS, during which every request reads the row from PostgreSQL."""
    _local.pop(hashed_key, None)
    try:
        get_redis().set(cache_key_for(hashed_key), _FORGOTTEN, ex=settings.API_KEY_CACHE_SECONDS)
    except RedisError:
        # Redis down: the entry expires by itself within API_KEY_CACHE_SECONDS.
        logger.warning("api key cache unavailable; cached entry expires on its own")


def _touch(key: ApiKey, now: datetime) -> None:
    # Conditional update: concurrent requests after the minute is up write once between them.
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ApiKey.objects.filter(stale, pk=key.pk).update(last_used_at=now)
    key.last_used_at = now
    _remember(key)
