"""integrations: Celery tasks. Thin: each calls one relay or service function, safe to run twice."""

from celery import shared_task

from integrations import relay


@shared_task(acks_late=True, time_limit=120, soft_time_limit=110, ignore_result=False)
def outbox_relay() -> dict:
    """Route and deliver what is due (kicked after each commit that wrote outbox rows, and
    swept by beat). Concurrent runs share the work through SKIP LOCKED."""
    return relay.outbox_relay(budget_seconds=60)
