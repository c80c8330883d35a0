"""Rate limits kept in Redis, per API key, per staff user, and per address for public routes.

A sliding window approximated from two fixed windows (the previous window's count weighted
by how much of it still overlaps): one Redis round trip per request, no burst at window
edges. If Redis is down the limit is not enforced (fail open): refusing all traffic because
the rate limiter's store is away would turn a degradation into an outage.
"""

from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from crm_platform.actor import client_ip
from crm_platform.models import ApiKey
from crm_platform.redis import get_redis

logger = logging.getLogger(__name__)

_PERIODS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}


def parse_rate(rate: str) -> tuple[int, int]:
    """'100/min' -> (100, 60)."""
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period.strip().lower()]


def sliding_window_hit(key: str, limit: int, window: int, now: float | None = None) -> float | None:
    """Count one hit; None when allowed, else the seconds to wait."""
    return sliding_window_hits([(key, limit, window)], now=now)[0]


# One command for any number of windows: each window's current counter is raised by its hits
# (ARGV[2w-1]; given its expiry ARGV[2w] when new), and the previous window's count read.
# Cheaper than a pipeline of three commands a window, for Redis and for redis-py, on every API
# request (and a batch counts each of its app users' windows at once).
_HITS = """
local out = {}
for i = 1, #KEYS, 2 do
  local hits = tonumber(ARGV[i])
  local n = redis.call('INCRBY', KEYS[i], hits)
  if n == hits then redis.call('EXPIRE', KEYS[i], ARGV[i + 1]) end
  out[#out + 1] = n
  out[#out + 1] = tonumber(redis.call('GET', KEYS[i + 1]) or '0')
end
return out
"""
_scripts: dict[int, object] = {}


def _hits_script():
    """The script, registered once per Redis client (redis-py sends EVALSHA, and the source
    again only if the server has forgotten it)."""
    client = get_redis()
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(_HITS)
    return script


def sliding_window_hits(
    windows: list[tuple[str, int, int]], now: float | None = None, hits: list[int] | None = None
) -> list[float | None]:
    """Count hits (one each, or `hits`, one count per window) in each (key, limit, window), all
    in one Redis command; for each, None when allowed, else the seconds to wait."""
    now = time.time() if now is None else now
    keys, args = [], []
    for n, (key, _, window) in enumerate(windows):
        current = int(now // window)
        keys += [f"rl:{key}:{current}", f"rl:{key}:{current - 1}"]
        args += [1 if hits is None else hits[n], window * 2]
    replies = _hits_script()(keys=keys, args=args)
    waits = []
    for n, (_, limit, window) in enumerate(windows):
        count, previous = replies[2 * n], replies[2 * n + 1]
        waits.append(_wait(int(count), int(previous or 0), limit, window, now - int(now // window) * window))
    return waits


def _wait(count: int, previous: int, limit: int, window: int, elapsed: float) -> float | None:
    weighted = previous * (window - elapsed) / window + count
    if weighted <= limit:
        return None
    # When will the weighted count drop to the limit? Either the previous window fades out
    # enough before this window ends, or we wait for the next window.
    if previous:
        fade = (weighted - limit) * window / previous
        wait = min(fade, window - elapsed)
    else:
        wait = window - elapsed
    return max(wait, 1.0)


class RedisRateThrottle(BaseThrottle):
    """One or more sliding windows, counted in one Redis round trip. A subclass names its rate
    (`rate_name`, a key of DEFAULT_THROTTLE_RATES) and whom it counts (`identity`), or, to count
    several windows at once, overrides `windows`."""

    rate_name: str = ""

    def identity(self, request) -> str | None:
        """Who is counted; None means this throttle does not apply to the request."""
        return None

    def rate_for(self, request) -> str | None:
        return settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].get(self.rate_name)

    def windows(self, request) -> list[tuple[str, str]]:
        """(counter, rate) pairs this request counts against."""
        ident = self.identity(request)
        rate = self.rate_for(request) if ident else None
        return [(f"{self.rate_name}:{ident}", rate)] if rate else []

    def allow_request(self, request, view) -> bool:
        self.wait_seconds = None
        windows = [(name, *parse_rate(rate)) for name, rate in self.windows(request)]
        if not windows:
            return True
        try:
            waits = [w for w in sliding_window_hits(windows) if w is not None]
        except Exception:
            logger.warning("rate limiter unavailable (Redis); request allowed")
            return True
        self.wait_seconds = max(waits) if waits else None
        return self.wait_seconds is None

    def wait(self):
        return None if self.wait_seconds is None else math.ceil(self.wait_seconds)


class PrincipalRateThrottle(RedisRateThrottle):
    """Per API key (rate `api_key`) or per staff user (rate `user`)."""

    def identity(self, request):
        if isinstance(request.auth, ApiKey):
            self.rate_name = "api_key"
            return str(request.auth.pk)
        if request.user and request.user.is_authenticated:
            self.rate_name = "user"
            return str(request.user.pk)
        return None


class AddressRateThrottle(RedisRateThrottle):
    """Per client address, for public routes (rate `anon`)."""

    rate_name = "anon"

    def identity(self, request):
        return client_ip(request._request) or "unknown"


class BulkRateThrottle(RedisRateThrottle):
    """Bulk endpoints, per API key or staff user (rate `bulk`, seed 002: 1,000 requests/hour)."""

    rate_name = "bulk"

    def identity(self, request):
        if isinstance(request.auth, ApiKey):
            return f"key:{request.auth.pk}"
        if request.user and request.user.is_authenticated:
            return f"user:{request.user.pk}"
        return None
