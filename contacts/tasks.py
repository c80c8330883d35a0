"""Contacts jobs: thin, idempotent, safe to run twice."""

from celery import shared_task

from contacts.bulk import contacts_add_tag, contacts_set_owner
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
    who = Actor.from_task(actor)
    if action == "set_owner":
        return contacts_set_owner(ids=ids, owner_id=value, actor=who)
    if action == "add_tag":
        return contacts_add_tag(ids=ids, tag=value, actor=who)
    raise ValueError(f"unknown bulk change {action!r}")
