"""Contacts jobs: thin, idempotent, safe to run twice."""

from celery import shared_task

from contacts.services import lifecycle_sweep as lifecycle_sweep_service
from crm_platform.actor import Actor


@shared_task(acks_late=True, time_limit=3600, soft_time_limit=3500, ignore_result=False)
def lifecycle_sweep() -> dict[str, int]:
    """At-Risk and Churned by the thresholds staff set (LifecycleSettings)."""
    return lifecycle_sweep_service(actor=Actor.system("task contacts.lifecycle_sweep"))
