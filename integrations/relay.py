"""The outbox relay: route unrouted rows to destinations, deliver due rows, retry, dead-letter.

Routing claims unrouted rows (destination "") in id order and, in the same transaction, writes
one child row per interested destination and marks the parent `routed`. One router runs at a
time (a transaction-level advisory lock), so children are written in the order their parents
were, which the ordering rule below relies on.

Delivery claims due child rows with `FOR UPDATE SKIP LOCKED`, skipping any row that has an
earlier undelivered sibling for the same (destination, object): a later change never
overtakes an earlier one to the same place. The claim is held while the adapter delivers, so
a crashed worker's rows come back on their own (at-least-once; webhook receivers de-duplicate
on `webhook-id`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from crm_platform.actor import Actor
from crm_platform.models import OutboxMessage
from integrations import sync
from integrations.destinations import (
    DeferDelivery,
    PermanentDeliveryError,
    TransientDeliveryError,
    destination_for,
    destinations,
    retry_delay,
)

logger = logging.getLogger(__name__)

OPEN = (OutboxMessage.Status.PENDING, OutboxMessage.Status.FAILED)
ROUTER_LOCK_KEY = 5_318_008_001  # pg advisory lock: one router at a time
UNKNOWN_DESTINATION_WAIT = 300


def outbox_route_batch(*, limit: int = 1000) -> int:
    """Route up to `limit` unrouted rows; returns how many were routed (0 if another router runs)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [ROUTER_LOCK_KEY])
            if not cursor.fetchone()[0]:
                return 0
        parents = list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(destination="", status=OutboxMessage.Status.PENDING)
            .order_by("id")[:limit]
        )
        if not parents:
            return 0
        wanted: dict[int, list[str]] = defaultdict(list)
        for destination in destinations():
            for pk, values in destination.targets(parents).items():
                wanted[pk].extend(values)
        now = timezone.now()
        OutboxMessage.objects.bulk_create(
            [
                OutboxMessage(
                    topic=parent.topic,
                    destination=value,
                    parent_id=parent.pk,
                    object_type=parent.object_type,
                    object_id=parent.object_id,
                    payload=parent.payload,
                    request_id=parent.request_id,
                    created_at=parent.created_at,
                    next_attempt_at=now,
                )
                for parent in parents
                for value in wanted.get(parent.pk, ())
            ],
            batch_size=1000,
        )
        OutboxMessage.objects.filter(pk__in=[p.pk for p in parents]).update(
            status=OutboxMessage.Status.ROUTED, delivered_at=now
        )
    return len(parents)


def outbox_deliver_batch(*, limit: int = 100) -> int:
    """Attempt up to `limit` due rows; returns how many were attempted (delivered or not)."""
    earlier_open = OutboxMessage.objects.filter(
        destination=OuterRef("destination"),
        object_type=OuterRef("object_type"),
        object_id=OuterRef("object_id"),
        id__lt=OuterRef("id"),
        status__in=OPEN,
    )
    with transaction.atomic():
        rows = list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(status__in=OPEN, next_attempt_at__lte=timezone.now())
            .exclude(destination="")
            .filter(~Exists(earlier_open))
            .order_by("next_attempt_at", "id")[:limit]
        )
        for row in rows:
            _attempt(row)
        OutboxMessage.objects.bulk_update(
            rows, ["status", "attempts", "next_attempt_at", "last_error", "delivered_at"], batch_size=500
        )
        sync.sync_events_record_outbound(rows)
    return len(rows)


def _attempt(row: OutboxMessage) -> None:
    """Deliver one row through its adapter and set its next state (saved by the caller)."""
    destination = destination_for(row.destination)
    now = timezone.now()
    if destination is None:
        logger.warning("outbox row %s: no destination %r registered; waiting", row.pk, row.destination)
        row.next_attempt_at = now + timedelta(seconds=UNKNOWN_DESTINATION_WAIT)
        return
    # A savepoint per row: an adapter that breaks (a bug, not a delivery outcome) loses its own
    # half-done writes and fails only its row; typed outcomes keep theirs (delivery log, endpoint state).
    savepoint = transaction.savepoint()
    try:
        destination.deliver(row)
    except DeferDelivery as deferred:
        transaction.savepoint_commit(savepoint)
        row.next_attempt_at = now + timedelta(seconds=deferred.seconds)
        return
    except PermanentDeliveryError as exc:
        transaction.savepoint_commit(savepoint)
        _fail(row, destination, str(exc), permanent=True)
        return
    except TransientDeliveryError as exc:
        transaction.savepoint_commit(savepoint)
        _fail(row, destination, str(exc), retry_after=exc.retry_after)
        return
    except Exception as exc:  # an adapter bug must not wedge the queue: count it as a failed attempt
        transaction.savepoint_rollback(savepoint)
        logger.exception("outbox row %s: %s adapter raised", row.pk, destination.name)
        _fail(row, destination, f"internal error: {type(exc).__name__}")
        return
    transaction.savepoint_commit(savepoint)
    row.attempts += 1
    row.status = OutboxMessage.Status.DELIVERED
    row.delivered_at = timezone.now()
    row.last_error = ""


def _fail(row: OutboxMessage, destination, error: str, *, permanent: bool = False, retry_after=None) -> None:
    row.attempts += 1
    row.last_error = error[:1000]
    delay = None if permanent else retry_delay(destination, row.attempts)
    if delay is None:
        row.status = OutboxMessage.Status.DEAD
        logger.warning(
            "outbox row %s to %s is dead after %s attempts: %s", row.pk, row.destination, row.attempts, error
        )
        return
    row.status = OutboxMessage.Status.FAILED
    row.next_attempt_at = timezone.now() + timedelta(seconds=max(delay, retry_after or 0))


def outbox_relay(*, budget_seconds: float = 50.0, route_limit: int = 1000, deliver_limit: int = 100) -> dict:
    """Route and deliver until nothing is due or the time budget is spent."""
    deadline = time.monotonic() + budget_seconds
    routed = attempted = 0
    while time.monotonic() < deadline:
        batch_routed = outbox_route_batch(limit=route_limit)
        batch_attempted = outbox_deliver_batch(limit=deliver_limit)
        routed += batch_routed
        attempted += batch_attempted
        if not batch_routed and not batch_attempted:
            break
    return {"routed": routed, "attempted": attempted}


def outbox_replay(*, ids, actor: Actor) -> int:
    """Send rows again, now: delivery rows as they are, routed parents through their
    undelivered children (a delivered child is not sent twice). Returns how many rows were reset."""
    from compliance.services import audit_record_many

    ids = list(ids)
    with transaction.atomic():
        rows = OutboxMessage.objects.filter(pk__in=ids).exclude(destination="").values_list("pk", flat=True)
        children = (
            OutboxMessage.objects.filter(parent_id__in=ids)
            .exclude(status=OutboxMessage.Status.DELIVERED)
            .values_list("pk", flat=True)
        )
        reset_ids = sorted({*rows, *children})
        count = OutboxMessage.objects.filter(pk__in=reset_ids).update(
            status=OutboxMessage.Status.PENDING,
            attempts=0,
            next_attempt_at=timezone.now(),
            last_error="",
            delivered_at=None,
        )
        sync.sync_events_mark_replayed(outbox_ids=reset_ids)
        audit_record_many(
            actor=actor,
            action="outbox.replay",
            object_type=OutboxMessage._meta.label_lower,
            rows=[(pk, {}) for pk in reset_ids],
        )
    return count


def retention_days() -> int:
    return int(getattr(settings, "OUTBOX_RETENTION_DAYS", 7))


def outbox_purge(*, older_than_days: int | None = None, chunk: int = 10_000) -> int:
    """Delete delivered and routed rows older than the retention, in chunks; returns how many went.
    Dead and pending rows stay until staff replay or remove them."""
    cutoff = timezone.now() - timedelta(days=retention_days() if older_than_days is None else older_than_days)
    done = OutboxMessage.Status.DELIVERED, OutboxMessage.Status.ROUTED
    total = 0
    while True:
        ids = list(
            OutboxMessage.objects.filter(status__in=done, delivered_at__lt=cutoff).values_list("pk", flat=True)[:chunk]
        )
        if not ids:
            return total
        total += OutboxMessage.objects.filter(pk__in=ids).delete()[0]
