"""Platform jobs. Tasks are thin: take ids, call a service, safe to run twice."""

from celery import shared_task
from django.contrib.sessions.models import Session
from django.utils import timezone


@shared_task(acks_late=True, time_limit=600, soft_time_limit=570, ignore_result=False)
def clear_expired_sessions() -> int:
    """Delete staff sessions past their expiry; returns how many went."""
    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    return deleted
