"""Rate limits kept in Redis, per API key, per staff user, and per address for public routes.

A sliding window approximated from two fixed windows (the previous window's count weighted
by how much of it still overlaps): one Redis round trip per request, no burst at window
edges. If Redis is down the limit is not enforced (fail open): refusing all traffic because
the rate limiter's store is away would turn a degradation into an outage.
"""

from __future__ import annotations

import json
import logging
import math
import time

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from crm_platform.actor import client_ip
from crm_platform.models import ApiKey, IdempotencyRecord
from crm_platform.rates import parse_rate
from crm_platform.redis import get_redis

logger = logging.getLogger(__name__)


def sliding_window_hit(key: str, limit: int, window: int, now: float | None = None) -> float | None:
    """Count one hit; None when allowed, else the seconds to wait."""
    return sliding_window_hits([(key, limit, window)], now=now)[0]


# One command for any number of windows: each window's current counter is incremented (and
# given its expiry when new), and the previous window's count read. Cheaper than a pipeline of
# three commands a window, for Redis and for redis-py, on every API request. A window of a
# group (ARGV member not empty: one app user of a sender) is a field of the group's hash per
# window, so a batch can count hundreds of members at once (_MEMBER_HITS).
_HITS = """
local out = {}
for i = 1, #KEYS, 2 do
  local ttl, member = ARGV[i], ARGV[i + 1]
  local n, previous
  if member == '' then
    n = redis.call('INCR', KEYS[i])
    if n == 1 then redis.call('EXPIRE', KEYS[i], ttl) end
    previous = redis.call('GET', KEYS[i + 1])
  else
    n = redis.call('HINCRBY', KEYS[i], member, 1)
    redis.call('EXPIRE', KEYS[i], ttl, 'NX')
    previous = redis.call('HGET', KEYS[i + 1], member)
  end
  out[#out + 1] = n
  out[#out + 1] = tonumber(previous or '0')
end
return out
"""
# Many members of one group at once (a batch's app users): the members and their hits travel
# as two JSON arrays (not thousands of ARGV, which redis-py packs one by one); both windows are
# read in one HMGET each and the new counts written in one HSET (a script runs alone, so this
# is as atomic as an HINCRBY each, at a fraction of the calls). Each member is admitted as many
# of its hits as still fit under the limit, and only those are counted; the members that did
# not get all of theirs come back (index, admitted, count now, previous window's count).
_MEMBER_HITS = """
local members, hits = cjson.decode(ARGV[1]), cjson.decode(ARGV[2])
local ttl, limit, window, remaining = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local current = redis.call('HMGET', KEYS[1], unpack(members))
local previous = redis.call('HMGET', KEYS[2], unpack(members))
local counts, out = {}, {}
for i, member in ipairs(members) do
  local c = tonumber(current[i] or '0')
  local p = tonumber(previous[i] or '0')
  -- the weighted count as sliding_window_hits weighs it, in the same order of operations
  local base = p * remaining / window + c
  local admit = math.max(0, math.min(hits[i], math.floor(limit - base)))
  while admit > 0 and base + admit > limit do admit = admit - 1 end
  while admit < hits[i] and base + admit + 1 <= limit do admit = admit + 1 end
  counts[2 * i - 1] = member
  counts[2 * i] = c + admit
  if admit < hits[i] then
    out[#out + 1] = i - 1
    out[#out + 1] = admit
    out[#out + 1] = c + admit
    out[#out + 1] = p
  end
end
redis.call('HSET', KEYS[1], unpack(counts))
redis.call('EXPIRE', KEYS[1], ttl, 'NX')
return out
"""
# Hits counted that turned out to cost nothing (a batch's events sent before, or refused):
# taken back from the window they were counted in, never below zero.
_MEMBER_REFUNDS = """
local members, refunds = cjson.decode(ARGV[1]), cjson.decode(ARGV[2])
for i, member in ipairs(members) do
  if redis.call('HINCRBY', KEYS[1], member, -refunds[i]) < 0 then redis.call('HSET', KEYS[1], member, 0) end
end
return #members
"""
_scripts: dict[tuple[int, str], object] = {}


def _counters(key: str, window: int, now: float) -> list[str]:
    """The Redis keys of `key`'s counters for the window `now` falls in and the one before it
    (one counter each, or one hash of its members' counters)."""
    current = int(now // window)
    return [f"rl:{key}:{current}", f"rl:{key}:{current - 1}"]


def _script(name: str, source: str):
    """A script, registered once per Redis client (redis-py sends EVALSHA, and the source
    again only if the server has forgotten it)."""
    client = get_redis()
    script = _scripts.get((id(client), name))
    if script is None:
        script = _scripts[(id(client), name)] = client.register_script(source)
    return script


def sliding_window_hits(
    windows: list[tuple[str, int, int] | tuple[str, int, int, str]], now: float | None = None
) -> list[float | None]:
    """Count one hit in each (key, limit, window[, member of the group `key`]), all in one Redis
    command; for each, None when allowed, else the seconds to wait."""
    now = time.time() if now is None else now
    keys, args = [], []
    for key, _, window, *member in windows:
        keys += _counters(key, window, now)
        args += [window * 2, member[0] if member else ""]
    replies = _script("hits", _HITS)(keys=keys, args=args)
    waits = []
    for n, (_, limit, window, *_member) in enumerate(windows):
        count, previous = replies[2 * n], replies[2 * n + 1]
        waits.append(_wait(int(count), int(previous or 0), limit, window, now - int(now // window) * window))
    return waits


def sliding_window_hits_members(
    key: str, hits: dict[str, int], limit: int, window: int, now: float
) -> dict[str, tuple[int, float]]:
    """Admit and count up to `hits[member]` hits in each member's window of the group `key`
    (the windows sliding_window_hits counts for (key, limit, window, member)), as many as fit
    under `limit`, in one Redis command: {member: (hits admitted, seconds until one more
    fits)} for the members that did not get all of theirs. `now` (time.time()) also names the
    window for sliding_window_refund."""
    if not hits:
        return {}
    elapsed = now - int(now // window) * window
    members = list(hits)
    replies = _script("members", _MEMBER_HITS)(
        keys=_counters(key, window, now),
        args=[
            json.dumps(members),
            json.dumps([hits[member] for member in members]),
            window * 2,
            limit,
            window,
            repr(window - elapsed),
        ],
    )
    short = {}
    for n in range(0, len(replies), 4):
        index, admitted, count, previous = (int(v) for v in replies[n : n + 4])
        wait = _wait(count + 1, previous, limit, window, elapsed)
        short[members[index]] = (admitted, 1.0 if wait is None else wait)
    return short


def sliding_window_refund(key: str, refunds: dict[str, int], window: int, now: float) -> None:
    """Take back hits sliding_window_hits_members counted at `now` (in that window, even if a
    new one has begun since) that turned out to cost nothing."""
    refunds = {member: n for member, n in refunds.items() if n > 0}
    if refunds:
        members = list(refunds)
        _script("refunds", _MEMBER_REFUNDS)(
            keys=_counters(key, window, now)[:1],
            args=[json.dumps(members), json.dumps([refunds[member] for member in members])],
        )


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

    def windows(self, request) -> list[tuple[str, str] | tuple[str, str, str]]:
        """(counter, rate[, member of the group `counter`]) this request counts against."""
        ident = self.identity(request)
        rate = self.rate_for(request) if ident else None
        return [(f"{self.rate_name}:{ident}", rate)] if rate else []

    def allow_request(self, request, view) -> bool:
        self.wait_seconds = None
        windows = [(name, *parse_rate(rate), *member) for name, rate, *member in self.windows(request)]
        if not windows:
            return True
        try:
            waits = [w for w in sliding_window_hits(windows) if w is not None]
        except Exception:
            logger.warning("rate limiter unavailable (Redis); request allowed")
            return True
        self.wait_seconds = max(waits) if waits else None
        if self.wait_seconds is not None and _key_used_before(request, view):
            self.wait_seconds = None
        return self.wait_seconds is None

    def wait(self):
        return None if self.wait_seconds is None else math.ceil(self.wait_seconds)


def _key_used_before(request, view) -> bool:
    """Whether a POST carries an Idempotency-Key its client used before: it is answered as then
    (the replay, or the 409/422 the key's record decides), which costs nothing, so a client
    retrying a request whose answer it lost gets that answer rather than 429 (README,
    Idempotency). One lookup, only when the request is over a limit, where the view keeps its
    keys: `view.idempotency_key_used(owner, key)` (the event routes: the inbox), else the
    Idempotency-Key records."""
    from crm_platform.idempotency import HEADER, key_refusal, owner_of  # it imports DRF, which imports us

    key = request.headers.get(HEADER)
    if request.method != "POST" or not key or key_refusal(key, required=True) is not None:
        return False
    if not (request.user and request.user.is_authenticated):
        return False
    used = getattr(view, "idempotency_key_used", None) or _recorded
    return used(owner_of(request), key)


def _recorded(owner: str, key: str) -> bool:
    return IdempotencyRecord.objects.filter(owner=owner, key=key).exists()


class PrincipalRateThrottle(RedisRateThrottle):
    """Per API key (rate `api_key`) or per staff user (rate `user`)."""

    def identity(self, request):
        if isinstance(request.auth, ApiKey):
            self.rate_name = "api_key"
            return request.auth.owner
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
            return request.auth.owner
        if request.user and request.user.is_authenticated:
            return f"user:{request.user.pk}"
        return None
