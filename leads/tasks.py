"""Leads jobs. Thin: load by id, call a service; safe to run twice."""

import logging

from celery import shared_task

from contacts.models import Contact
from crm_platform.actor import Actor
from leads import selectors, services

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, time_limit=3600, soft_time_limit=3500)
def lead_scores_recompute_all() -> int:
    """Every contact's lead score from the current rules (hourly: decay moves scores with time)."""
    return services.lead_scores_recompute(actor=Actor.system("task leads.lead_scores_recompute_all"))


@shared_task(acks_late=True, time_limit=3600, soft_time_limit=3500)
def clv_recompute_all() -> int:
    """Every customer's lifetime value from their paid orders (nightly)."""
    return services.clv_recompute(actor=Actor.system("task leads.clv_recompute_all"))


@shared_task(acks_late=True, time_limit=60, soft_time_limit=50)
def lead_score_recompute(contact_id: int) -> int | None:
    """One contact's score, on demand (e.g. after an event); None when the contact is gone."""
    contact = Contact.objects.filter(pk=contact_id).first()
    if contact is None:
        return None
    score, _ = services.lead_score_recompute(contact=contact, actor=Actor.system("task leads.lead_score_recompute"))
    return score


@shared_task(acks_late=True, time_limit=900, soft_time_limit=850)
def pipeline_rollup_check() -> int:
    """Compare the pipeline rollup with a full scan (nightly); on drift, log it and rebuild.
    Returns the number of rollup rows that had drifted."""
    drift = selectors.pipeline_rollup_drift()
    if drift:
        logger.error("pipeline rollup drifted on %d stage(s); rebuilding", len(drift), extra={"stages": drift})
        services.pipeline_rollup_rebuild(actor=Actor.system("task leads.pipeline_rollup_check"))
    return len(drift)
