"""integrations: Celery tasks. Thin: each calls one relay or service function, safe to run twice."""

import threading

from celery import shared_task
from celery.signals import worker_shutting_down

from integrations import inbox, relay

# Set when this worker process starts a warm shutdown (solo and thread pools run tasks in the
# process that gets the signal): the relay then stops between batches instead of running out
# its time budget, so a supervisor that kills slow-stopping workers does not cut a batch short
# (its sent rows would roll back and go out again).
_shutting_down = threading.Event()


@worker_shutting_down.connect
def _stop_relaying(**kwargs) -> None:
    _shutting_down.set()


# A relay batch's sends commit with its claim, so a batch the hard limit kills is sent again.
# The relay checks its budget before each send, so a run ends at most one send past it; a
# webhook send takes at most WEBHOOK_TIMEOUT_SECONDS (10 s) in all, after a host name lookup of
# at most WEBHOOK_DNS_TIMEOUT_SECONDS (5 s): 50 s + 15 s leaves the soft limit (110 s) some 45 s
# clear. It stays a backstop: the relay then commits what it sent, in the 10 s before the hard
# limit.
RELAY_BUDGET_SECONDS = 50


# No result kept (CELERY_TASK_IGNORE_RESULT): a run is kicked by every commit that writes
# outbox rows, and each kept result was a key in Redis for an hour (CELERY_RESULT_EXPIRES).
@shared_task(acks_late=True, time_limit=120, soft_time_limit=110)
def outbox_relay() -> dict:
    """Route and deliver what is due (kicked after each commit that wrote outbox rows, and
    swept by beat). Concurrent runs share the work through SKIP LOCKED."""
    return relay.outbox_relay(budget_seconds=RELAY_BUDGET_SECONDS, should_stop=_shutting_down.is_set)


@shared_task(acks_late=True, time_limit=120, soft_time_limit=110)
def inbox_apply() -> dict:
    """Apply the queued inbound events (kicked after each accepting request, unless a kick is
    already waiting, and swept by beat). One batch at a time across workers (an advisory lock),
    so an event sent after another's 202 applies after it."""
    return inbox.inbox_apply(budget_seconds=60, should_stop=_shutting_down.is_set)
