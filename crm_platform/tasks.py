"""Platform jobs. Tasks are thin: take ids, call a service, safe to run twice."""

import time

from celery import shared_task
from django.contrib.sessions.models import Session
from django.utils import timezone

from crm_platform.redis import get_redis

HEARTBEAT_KEY = "beat:heartbeat"


@shared_task(acks_late=True, time_limit=30, ignore_result=False)
def heartbeat() -> float:
    """Record that beat and a worker are alive (shown by /readyz as `beat_last_seen`)."""
    now = time.time()
    get_redis().set(HEARTBEAT_KEY, now, ex=3600)
    return now


@shared_task(acks_late=True, time_limit=600, ignore_result=False)
def clear_expired_sessions() -> int:
    """Delete staff sessions past their expiry; returns how many went."""
    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    return deleted
