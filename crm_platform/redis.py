"""One Redis client per process for the things Django's cache API cannot do in one round
trip (rate-limit counters, health pings). Short timeouts: Redis being slow or down must
degrade a request, never hang it."""

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5, health_check_interval=30)


def get_redis() -> redis.Redis:
    return _client(settings.REDIS_URL)
