"""The outbox relay: route unrouted rows to destinations, deliver due rows, retry, dead-letter.

Routing claims unrouted rows (destination "") in id order and, in the same transaction, writes
one child row per interested destination and marks the parent `routed`. One router runs at a
time (a transaction-level advisory lock), so children are written in the order their parents
were, which the ordering rule below relies on.

Delivery claims due child rows with `FOR UPDATE SKIP LOCKED`, skipping any row that has an
earlier undelivered sibling for the same (destination, object): a later change never
overtakes an earlier one to the same place. The claim is held while the adapter delivers, so
a crashed worker's rows come back on their own (at-least-once; webhook receivers de-duplicate
on `webhook-id`). Because sent rows and their claim commit together, a batch must end before
anyone kills its task: it checks the time budget before each send, spends at most one timeout
per target that does not answer, and when the task is stopped anyway (the soft time limit)
commits what it did before the stop goes on (outbox_deliver_batch).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from compliance.consent import restricted_when
from compliance.subjects import subject_model
from crm_platform.actor import Actor
from crm_platform.models import OutboxMessage
from integrations import sync
from integrations.destinations import (
    DeferDelivery,
    PermanentDeliveryError,
    TargetUnreachableError,
    TransientDeliveryError,
    destination_for,
    destinations,
    retry_delay,
    retry_schedule,
    task_stopping,
)

logger = logging.getLogger(__name__)

OPEN = (OutboxMessage.Status.PENDING, OutboxMessage.Status.FAILED)
ROUTER_LOCK_KEY = 5_318_008_001  # pg advisory lock: one router at a time
UNKNOWN_DESTINATION_WAIT = 300
# GDPR Art. 18: a message about a contact whose processing is restricted (now, or when the
# message was produced) goes to no destination. Routing gives it no delivery row; a delivery
# row routed before the restriction goes dead untried. Lifting the restriction sends the
# contact's current state (compliance.consent.restriction_lift). The erasure's notice still
# goes: the destinations must delete their copy (Art. 17 and 19).
WITHHELD = "not sent: the contact's processing is restricted (GDPR Art. 18)"
SENT_WHEN_RESTRICTED = frozenset({"contact.deleted"})


def _contact_of(message: OutboxMessage) -> int | None:
    """The contact a message is about: its object, or the `contact` its payload names (leads,
    deals, orders, subscriptions, tickets, announced activities)."""
    if message.object_type == subject_model().model_label:
        found = message.object_id
    else:
        found = message.payload.get("contact") if isinstance(message.payload, dict) else None
    try:
        return int(found) if found is not None else None
    except (TypeError, ValueError):
        return None


def _withheld(messages) -> set[int]:
    """The ids of these messages to send nowhere (WITHHELD): compliance.restricted_when, one
    small query while nobody was restricted lately."""
    moments = {}
    for message in messages:
        if message.topic not in SENT_WHEN_RESTRICTED and (contact_id := _contact_of(message)) is not None:
            moments[message.pk] = (contact_id, message.created_at)
    return restricted_when(moments)


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
        withheld = _withheld(parents)
        wanted: dict[int, list[str]] = defaultdict(list)
        sendable = [parent for parent in parents if parent.pk not in withheld]
        for destination in destinations():
            for pk, values in destination.targets(sendable).items():
                wanted[pk].extend(values)
        now = timezone.now()
        pairs = [(parent.pk, value) for parent in parents for value in wanted.get(parent.pk, ())]
        if pairs:
            # Children copy their parent's columns inside PostgreSQL (no payload round trip
            # through Python), and take their ids in their parents' order (ORDER BY u.n).
            table = OutboxMessage._meta.db_table
            with connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {table} (topic, destination, parent_id, object_type, object_id, payload, "  # noqa: S608
                    "status, attempts, next_attempt_at, last_error, request_id, created_at) "
                    "SELECT p.topic, u.destination, p.id, p.object_type, p.object_id, p.payload, 'pending', 0, %s, "
                    f"'', p.request_id, p.created_at FROM unnest(%s::bigint[], %s::text[]) WITH ORDINALITY "
                    f"AS u(parent_id, destination, n) JOIN {table} p ON p.id = u.parent_id ORDER BY u.n",
                    [now, [pk for pk, _ in pairs], [value for _, value in pairs]],
                )
        OutboxMessage.objects.filter(pk__in=[p.pk for p in sendable]).update(
            status=OutboxMessage.Status.ROUTED, delivered_at=now
        )
        if withheld:  # routed nowhere, and saying why (the admin shows last_error)
            OutboxMessage.objects.filter(pk__in=withheld).update(
                status=OutboxMessage.Status.ROUTED, delivered_at=now, last_error=WITHHELD
            )
    return len(parents)


# Due rows with no earlier undelivered sibling for the same (destination, object). OFFSET 0
# fences NOT EXISTS off from becoming a planner anti-join: it stays a per-row subplan, an index
# probe on outbox_dest_object_idx. As an anti-join, statistics gone stale after a burst of
# inserts led PostgreSQL to scan every open row for each candidate (150 ms a claim at 3,000
# open rows, and growing with the backlog).
_CLAIM_SQL = (
    "SELECT o.* FROM {table} o "
    "WHERE o.status IN ('pending', 'failed') AND o.next_attempt_at <= %s AND o.destination <> '' "
    "AND NOT EXISTS (SELECT 1 FROM {table} e WHERE e.destination = o.destination "
    "AND e.object_type = o.object_type AND e.object_id = o.object_id AND e.id < o.id "
    "AND e.status IN ('pending', 'failed') OFFSET 0) "
    "ORDER BY o.next_attempt_at, o.id LIMIT %s FOR UPDATE OF o SKIP LOCKED"
)


class BatchCounts(NamedTuple):
    attempted: int  # handed to their adapter (delivered, failed, or deferred by it), or withheld (WITHHELD)
    postponed: int  # held back, untried, behind a target that did not answer


def outbox_deliver_batch(
    *, limit: int = 100, deadline: float | None = None, unreachable: dict[str, datetime] | None = None
) -> BatchCounts:
    """Attempt up to `limit` due rows, in one transaction that holds their claim.

    `deadline` (a time.monotonic() value) is checked before each send, so a batch ends at most
    one send's timeout past it: the rows not reached are left as they were (not attempted, not
    counted) and are claimed again by the next batch.

    A target that did not answer (TargetUnreachableError: a timeout, a refused connection) costs
    one attempt: its other rows are postponed until that row's next attempt, without spending
    an attempt of theirs. They were never tried, so counting them would kill them faster than
    the retry schedule promises; the row that was tried keeps the target's failure record going
    (webhooks: its delivery log, `failing_since`, the disabling after days). Postponing (rather
    than leaving them due) keeps them from filling the next claims ahead of other targets' rows.
    `unreachable` (destination -> until when) carries such targets from batch to batch:
    outbox_relay passes one per run. A target is tried again once its time has come.

    When the task is stopped mid-batch (task_stopping: the soft time limit, a shutdown), the row
    in flight counts as a failed attempt (it may have reached its receiver, and a row whose send
    always outlasts the task must still move along its schedule), the rows after it are left as
    they were, what the batch did is committed, and then the stop is raised again. So rows
    already sent are not sent again. The stop strikes almost always during a send, the one step
    that waits on someone else; should it strike in our own database work instead, the
    connection may be unusable, the commit then fails and the batch rolls back: its rows come
    back and are sent again, as after a crash (at-least-once; receivers de-duplicate on
    `webhook-id`)."""
    sql = _CLAIM_SQL.format(table=OutboxMessage._meta.db_table)
    unreachable = {} if unreachable is None else unreachable
    stopped = None
    with transaction.atomic():
        rows = list(OutboxMessage.objects.raw(sql, [timezone.now(), limit]))
        if not rows:
            return BatchCounts(0, 0)
        withheld = _withheld(rows)
        for row in rows:  # routed before the restriction: not tried, not retried
            if row.pk in withheld:
                row.status, row.last_error = OutboxMessage.Status.DEAD, WITHHELD
        attempted: list[OutboxMessage] = [row for row in rows if row.pk in withheld]
        rows = [row for row in rows if row.pk not in withheld]
        by_adapter: dict = defaultdict(list)
        for row in rows:
            by_adapter[destination_for(row.destination)].append(row)
        adapters = [adapter for adapter in by_adapter if adapter is not None]
        for adapter in adapters:
            if hasattr(adapter, "batch_begin"):
                adapter.batch_begin(by_adapter[adapter])
        postponed: list[OutboxMessage] = []
        for row in rows:
            if deadline is not None and time.monotonic() >= deadline:
                break
            until = unreachable.get(row.destination)
            if until is not None:
                if until > timezone.now():
                    row.next_attempt_at = until
                    postponed.append(row)
                    continue
                del unreachable[row.destination]
            attempted.append(row)
            try:
                answered = _attempt(row)
            except BaseException as exc:
                if not task_stopping(exc):
                    raise  # our own database work failed: the batch rolls back
                stopped = exc
                break
            if not answered:
                unreachable[row.destination] = _unreachable_until(row)
        for adapter in adapters:
            if hasattr(adapter, "batch_end"):
                adapter.batch_end()
        _save_outcomes(attempted + postponed)
        sync.sync_events_record_outbound(attempted)
    if stopped is not None:
        raise stopped
    return BatchCounts(len(attempted), len(postponed))


def _unreachable_until(row: OutboxMessage) -> datetime:
    """Until when the target that did not answer `row` is left alone: the row's next attempt,
    or, when that was its last, the schedule's first wait (another row then tries the target)."""
    if row.status == OutboxMessage.Status.FAILED:
        return row.next_attempt_at
    return timezone.now() + timedelta(seconds=retry_delay(destination_for(row.destination), 1) or 0)


def _save_outcomes(rows: list[OutboxMessage]) -> None:
    """The batch's new states in one UPDATE ... FROM unnest (bulk_update's CASE per field and
    row costs more to build than the delivery itself)."""
    table = OutboxMessage._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS o SET status = u.status, attempts = u.attempts, "  # noqa: S608
            "next_attempt_at = u.next_attempt_at, last_error = u.last_error, delivered_at = u.delivered_at "
            "FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::timestamptz[], %s::text[], %s::timestamptz[]) "
            "AS u(id, status, attempts, next_attempt_at, last_error, delivered_at) WHERE o.id = u.id",
            [
                [row.pk for row in rows],
                [row.status for row in rows],
                [row.attempts for row in rows],
                [row.next_attempt_at for row in rows],
                [row.last_error for row in rows],
                [row.delivered_at for row in rows],
            ],
        )


def _attempt(row: OutboxMessage) -> bool:
    """Deliver one row through its adapter and set its next state (saved by the caller).
    Returns False when the target did not answer (TargetUnreachableError). Raises again what
    stops the task, after counting the row's attempt."""
    destination = destination_for(row.destination)
    now = timezone.now()
    if destination is None:
        logger.warning("outbox row %s: no destination %r registered; waiting", row.pk, row.destination)
        row.next_attempt_at = now + timedelta(seconds=UNKNOWN_DESTINATION_WAIT)
        return True
    # A savepoint per row (unless the adapter opts out, see BaseDestination): an adapter that
    # breaks (a bug, not a delivery outcome) loses its own half-done writes and fails only its
    # row; typed outcomes keep theirs (delivery log, endpoint state).
    savepoint = transaction.savepoint() if getattr(destination, "savepoint_per_attempt", True) else None
    try:
        destination.deliver(row)
    except DeferDelivery as deferred:
        _release(savepoint)
        row.next_attempt_at = now + timedelta(seconds=deferred.seconds)
        return True
    except PermanentDeliveryError as exc:
        _release(savepoint)
        _fail(row, destination, str(exc), permanent=True)
        return True
    except TransientDeliveryError as exc:
        _release(savepoint)
        _fail(row, destination, str(exc), retry_after=exc.retry_after)
        return not isinstance(exc, TargetUnreachableError)
    except BaseException as exc:
        if savepoint is not None:
            transaction.savepoint_rollback(savepoint)
        if task_stopping(exc):
            _fail(row, destination, f"interrupted: {type(exc).__name__}")
            raise
        # An adapter bug must not wedge the queue: count it as a failed attempt.
        logger.exception("outbox row %s: %s adapter raised", row.pk, destination.name)
        _fail(row, destination, f"internal error: {type(exc).__name__}")
        return True
    _release(savepoint)
    row.attempts += 1
    row.status = OutboxMessage.Status.DELIVERED
    row.delivered_at = timezone.now()
    row.last_error = ""
    return True


def _release(savepoint) -> None:
    if savepoint is not None:
        transaction.savepoint_commit(savepoint)


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
    # A target may ask for a longer wait than the schedule's next step, up to its longest one:
    # beyond that a receiver could park its rows for ever (and every later change to the same
    # object behind them), or overflow the date and roll back the whole batch.
    longest = max(retry_schedule(destination))
    row.next_attempt_at = timezone.now() + timedelta(seconds=max(delay, min(retry_after or 0, longest)))


def outbox_relay(
    *, budget_seconds: float = 50.0, route_limit: int = 1000, deliver_limit: int = 100, should_stop=None
) -> dict:
    """Route and deliver until nothing is due, the time budget is spent, or `should_stop()`
    says so. The budget is checked before each send as well (outbox_deliver_batch), so a run
    ends at most one send's timeout past it; `should_stop` between batches only (a shutdown
    waits for the batch, whose sends have gone out). Returns the counts: routed, attempted,
    postponed (rows held back behind a target that did not answer)."""
    deadline = time.monotonic() + budget_seconds
    unreachable: dict[str, datetime] = {}  # targets that did not answer in this run
    routed = attempted = postponed = 0
    while time.monotonic() < deadline and not (should_stop and should_stop()):
        batch_routed = outbox_route_batch(limit=route_limit)
        batch = outbox_deliver_batch(limit=deliver_limit, deadline=deadline, unreachable=unreachable)
        routed += batch_routed
        attempted += batch.attempted
        postponed += batch.postponed
        if not batch_routed and not batch.attempted and not batch.postponed:
            break
    return {"routed": routed, "attempted": attempted, "postponed": postponed}


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


def outbox_overtaken(*, ids) -> int:
    """How many of these delivery rows have a later row for the same object already delivered
    to the same destination: sent again, they arrive after it (the receiver hears an older
    state last). The admin warns of them when it replays."""
    later = OutboxMessage.objects.filter(
        destination=OuterRef("destination"),
        object_type=OuterRef("object_type"),
        object_id=OuterRef("object_id"),
        pk__gt=OuterRef("pk"),
        status=OutboxMessage.Status.DELIVERED,
    )
    return OutboxMessage.objects.filter(pk__in=list(ids)).exclude(destination="").filter(Exists(later)).count()


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
