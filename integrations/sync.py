"""SyncEvent: the record of every change that crosses our boundary, in or out.

One INSERT per event (`sync_event_record`), or one INSERT ... SELECT FROM unnest for many
(`sync_events_record_many`, for the batch ingest path and the relay). Rows carry a digest of
the payload, never the payload, and errors carry field names and error kinds, never values.
Inbound events are recorded by the inbox applier as it applies them, and by the API for the
events it refuses at the door.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from compliance.crypto import hmac_digest
from crm_platform.actor import Actor
from crm_platform.api.fastjson import django_default, dumps
from crm_platform.models import OutboxMessage
from crm_platform.outbox import outbox_open
from integrations.models import SyncEvent

logger = logging.getLogger(__name__)

ERROR_CHARS = 500
INBOUND, OUTBOUND = SyncEvent.Direction.INBOUND, SyncEvent.Direction.OUTBOUND

# An outbox row's status -> its sync event's status.
_OUTBOX_STATUS = {
    OutboxMessage.Status.PENDING: SyncEvent.Status.PENDING,
    OutboxMessage.Status.FAILED: SyncEvent.Status.FAILED,
    OutboxMessage.Status.DEAD: SyncEvent.Status.DEAD,
    OutboxMessage.Status.DELIVERED: SyncEvent.Status.APPLIED,
}


def payload_digest(data: Any) -> str:
    """Keyed HMAC-SHA256 (hex, compliance.crypto.hmac_digest) of the canonical JSON of `data`:
    sorted keys, no spaces, UTF-8. The same payload always gives the same digest, so staff can
    match a sender's copy without us keeping it; keyed, because a plain hash of a small payload
    naming an email could be found again by hashing guesses. Written by orjson since the inbox:
    the same text as json.dumps for strings, integers, decimals, dates and ordinary floats;
    floats Python writes with an exponent ("1e-05") orjson writes otherwise ("1e-5"), so such a
    payload digests differently than before."""
    canonical = orjson.dumps(
        data, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME, default=django_default
    )
    return hmac_digest(canonical.decode())


def error_summary(exc: BaseException) -> str:
    """What went wrong, without the values that caused it: the error kind and the field names
    (a DRF message may quote the rejected value, e.g. '"x" is not a valid choice')."""
    name = type(exc).__name__
    fields = getattr(exc, "fields", None)  # ConflictError
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        fields = exc.error_dict
    if fields:
        return f"{name}: {', '.join(sorted(map(str, fields)))}"[:ERROR_CHARS]
    return name


@dataclass
class SyncRow:
    """One SyncEvent to write (see sync_events_record_many)."""

    direction: str
    provider: str
    event_type: str
    payload_digest: str
    status: str = SyncEvent.Status.PENDING
    object_type: str = ""
    object_id: str = ""
    external_id: str = ""
    attempts: int = 0
    last_error: str = ""
    outbox_message_id: int | None = None
    occurred_at: datetime | None = None

    def values(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "provider": self.provider[:50],
            "event_type": self.event_type[:100],
            "object_type": self.object_type[:100],
            "object_id": str(self.object_id or "")[:64],
            "external_id": str(self.external_id or "")[:128],
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error[:ERROR_CHARS],
            "payload_digest": self.payload_digest,
            "outbox_message_id": self.outbox_message_id,
            "occurred_at": self.occurred_at,
        }


def inbound_row(
    *,
    provider: str,
    event_type: str,
    payload: Any,
    status: str,
    occurred_at: datetime | None = None,
    object_type: str = "contacts.contact",
    object_id: str | int | None = None,
    external_id: str | None = None,
    error: str = "",
) -> SyncRow:
    """The row for one inbound event (applied, skipped_stale or failed), its payload digested."""
    return SyncRow(
        direction=INBOUND,
        provider=provider,
        event_type=event_type,
        payload_digest=payload_digest(payload),
        status=status,
        object_type=object_type if object_id not in (None, "") else "",
        object_id="" if object_id is None else str(object_id),
        external_id=external_id or "",
        attempts=1,
        last_error=error,
        occurred_at=occurred_at,
    )


def inbound_event_row(event, *, status: str, result: Mapping[str, Any] | None = None, error: str = "") -> SyncRow:
    """The row for one parsed inbound event (integrations.inbound.Event): its contact from the
    handler's result when there is one, its stale fields named in `last_error`."""
    result = result or {}
    return inbound_row(
        provider=event.source,
        event_type=event.type,
        payload={
            "type": event.type,
            "occurred_at": event.occurred_at,
            "user": event.user,
            "properties": event.properties,
            "source": event.source,
        },
        status=status,
        occurred_at=event.occurred_at,
        object_id=result.get("contact"),
        external_id=event.user.get("external_id"),
        error=error or stale_summary(result.get("stale") or ()),
    )


def sync_event_record(row: SyncRow) -> SyncEvent:
    """Write one SyncEvent (one INSERT) in the caller's transaction."""
    now = timezone.now()
    return SyncEvent.objects.create(**row.values(), created_at=now, updated_at=now)


_COLUMNS = (
    ("direction", "text"),
    ("provider", "text"),
    ("event_type", "text"),
    ("object_type", "text"),
    ("object_id", "text"),
    ("external_id", "text"),
    ("status", "text"),
    ("attempts", "int"),
    ("last_error", "text"),
    ("payload_digest", "text"),
    ("outbox_message_id", "bigint"),
    ("occurred_at", "timestamptz"),
)


def _insert_sql(*, upsert: bool) -> str:
    names = ", ".join(name for name, _ in _COLUMNS)
    types = ", ".join(f"{name} {kind}" for name, kind in _COLUMNS)
    # The rows travel as one JSON document: psycopg would quote a thousand text arrays' elements
    # one by one in Python. Read as json, which PostgreSQL walks once, rather than jsonb, which it
    # first builds whole (~2 ms less for a thousand rows).
    sql = (
        f"INSERT INTO {SyncEvent._meta.db_table} ({names}, created_at, updated_at) "  # noqa: S608
        f"SELECT u.*, %s, %s FROM json_to_recordset(%s::json) AS u({types})"
    )
    if upsert:
        # One row per outbox row: later attempts update it (the partial unique index's predicate
        # must be repeated for PostgreSQL to pick it as the arbiter).
        sql += (
            " ON CONFLICT (outbox_message_id) WHERE outbox_message_id IS NOT NULL DO UPDATE SET"
            " status = EXCLUDED.status, attempts = EXCLUDED.attempts,"
            " last_error = EXCLUDED.last_error, updated_at = EXCLUDED.updated_at"
        )
    return sql


def _params(rows: Sequence[SyncRow]) -> list:
    now = timezone.now()
    return [now, now, dumps([row.values() for row in rows])]


def sync_events_record_many(rows: Sequence[SyncRow], *, using=None) -> int:
    """Write many SyncEvents in one INSERT ... SELECT FROM json_to_recordset, in the caller's transaction.
    Rows naming an outbox row update that row's event instead of adding one. Returns the count."""
    if not rows:
        return 0
    upsert = any(row.outbox_message_id is not None for row in rows)
    with (using or connection).cursor() as cursor:
        cursor.execute(_insert_sql(upsert=upsert), _params(rows))
    return len(rows)


# ----------------------------------------------------------------------------- outbound


def sync_events_record_outbound(messages: Iterable[OutboxMessage]) -> int:
    """After a delivery batch: one SyncEvent per attempted outbox row, added on its first attempt
    and updated on each later one (status, attempts, last error). Caller's transaction."""
    rows = [
        SyncRow(
            direction=OUTBOUND,
            provider=m.destination,
            event_type=m.topic,
            payload_digest=payload_digest(outbox_open(m.payload)),  # what was published, not its token
            status=_OUTBOX_STATUS.get(m.status, SyncEvent.Status.PENDING),
            object_type=m.object_type,
            object_id=m.object_id,
            attempts=m.attempts,
            last_error=m.last_error,
            outbox_message_id=m.pk,
            occurred_at=m.created_at,
        )
        for m in messages
    ]
    return sync_events_record_many(rows)


def sync_events_mark_replayed(*, outbox_ids: Iterable[int]) -> int:
    """Outbox rows sent again (replay): their events go back to pending, attempts 0."""
    return SyncEvent.objects.filter(outbox_message_id__in=list(outbox_ids)).update(
        status=SyncEvent.Status.PENDING, attempts=0, last_error="", updated_at=timezone.now()
    )


def sync_events_retry(*, ids: Iterable[int], actor: Actor) -> dict[str, int]:
    """Retry from the admin. Outbound events replay their outbox rows (relay.outbox_replay:
        audited, back to pending now). Inbound events cannot be retried here: we keep a digest, not
        the payload, so they are counted, not changed: a failed event is applied again from the
    inbox's admin ("Inbound events"), which keeps a failed event's payload until retention.
        Returns {"replayed": outbox rows reset, "inbound": inbound events left as they were,
        "missing": outbound events whose outbox row was already purged, "overtaken": replayed rows
        a later message for the same object already reached (relay.outbox_overtaken)}."""
    from integrations.relay import outbox_overtaken, outbox_replay

    events = list(SyncEvent.objects.filter(pk__in=list(ids)).values_list("direction", "outbox_message_id"))
    outbox_ids = {pk for direction, pk in events if direction == OUTBOUND and pk is not None}
    existing = set(OutboxMessage.objects.filter(pk__in=outbox_ids).values_list("pk", flat=True))
    replayed = outbox_replay(ids=sorted(existing), actor=actor) if existing else 0
    return {
        "replayed": replayed,
        "overtaken": outbox_overtaken(ids=existing) if existing else 0,
        "inbound": sum(direction == INBOUND for direction, _ in events),
        "missing": len(outbox_ids - existing),
    }


def retention_days() -> int:
    return int(getattr(settings, "SYNC_EVENT_RETENTION_DAYS", 30))


def sync_events_purge(*, older_than_days: int | None = None, chunk: int = 10_000) -> int:
    """Delete SyncEvents older than SYNC_EVENT_RETENTION_DAYS (default 30), in chunks."""
    cutoff = timezone.now() - timedelta(days=retention_days() if older_than_days is None else older_than_days)
    total = 0
    while True:
        with transaction.atomic():
            ids = list(SyncEvent.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:chunk])
            if not ids:
                return total
            total += SyncEvent.objects.filter(pk__in=ids).delete()[0]


def stale_summary(stale: Sequence[str]) -> str:
    return ("stale: " + ", ".join(stale))[:ERROR_CHARS] if stale else ""


def result_status(result: Mapping[str, Any]) -> str:
    """applied, or skipped_stale when the conflict policy kept some of the event's fields out."""
    return SyncEvent.Status.SKIPPED_STALE if result.get("stale") else SyncEvent.Status.APPLIED
