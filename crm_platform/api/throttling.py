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
    now = time.time() if now is None else now
    current = int(now // window)
    elapsed = now - current * window
    r = get_redis()
    pipe = r.pipeline(transaction=False)
    pipe.incr(f"rl:{key}:{current}")
    pipe.expire(f"rl:{key}:{current}", window * 2)
    pipe.get(f"rl:{key}:{current - 1}")
    count, _, previous = pipe.execute()
    previous = int(previous or 0)
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
    rate_name: str = ""

    def identity(self, request) -> str | None:
        """Who is counted; None means this throttle does not apply to the request."""
        return None

    def rate_for(self, request) -> str | None:
        return settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].get(self.rate_name)

    def allow_request(self, request, view) -> bool:
        self.wait_seconds = None
        ident = self.identity(request)
        rate = self.rate_for(request) if ident else None
        if not rate:
            return True
        limit, window = parse_rate(rate)
        try:
            self.wait_seconds = sliding_window_hit(f"{self.rate_name}:{ident}", limit, window)
        except Exception:
            logger.warning("rate limiter unavailable (Redis); request allowed")
            return True
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
