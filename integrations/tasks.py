"""integrations: Celery tasks. Thin: each calls one relay or service function, safe to run twice."""

from celery import shared_task

from integrations import relay, services, sync


@shared_task(acks_late=True, time_limit=120, soft_time_limit=110, ignore_result=False)
def outbox_relay() -> dict:
    """Route and deliver what is due (kicked after each commit that wrote outbox rows, and
    swept by beat). Concurrent runs share the work through SKIP LOCKED."""
    return relay.outbox_relay(budget_seconds=60)


@shared_task(acks_late=True, time_limit=1800, soft_time_limit=1780, ignore_result=False)
def outbox_purge() -> dict:
    """Delete delivered outbox rows, webhook delivery logs and sync events past their retention."""
    return {
        "outbox": relay.outbox_purge(),
        "webhook_deliveries": services.webhook_deliveries_purge(),
        "sync_events": sync.sync_events_purge(),
    }
