"""Contacts jobs: thin, idempotent, safe to run twice."""

from celery import shared_task

from contacts import bulk
from contacts.services import lifecycle_sweep as lifecycle_sweep_service
from crm_platform.actor import Actor


@shared_task(acks_late=True, time_limit=3600, soft_time_limit=3500, ignore_result=False)
def lifecycle_sweep() -> dict[str, int]:
    """At-Risk and Churned by the thresholds staff set (LifecycleSettings)."""
    return lifecycle_sweep_service(actor=Actor.system("task contacts.lifecycle_sweep"))


@shared_task(acks_late=True, time_limit=1800, soft_time_limit=1750)
def contacts_bulk_change(action: str, ids: list[int], value, actor: list) -> int:
    """A staff bulk action too large to run inside the admin request ("set_owner" or "add_tag");
    set-based and safe to run twice (a contact already changed is left alone)."""
    return bulk.contacts_bulk_change(action=action, ids=ids, value=value, actor=Actor.from_task(actor))
