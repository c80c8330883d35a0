"""The inbox: inbound app events are accepted in one INSERT and applied just after, many at a time.

Accepting (the request, `inbox_accept`): the event is checked (envelope and type schema by
integrations.inbound.event_parse; a user the CRM knows, or whose sign-up is queued, by
`inbox_unknown_users`) and written as one InboundEvent row. That row is also the request's
Idempotency-Key record: (owner, key) is unique, so a replay, a reused key and two requests
racing with one key are settled by the INSERT itself (ON CONFLICT), and the answer (202
"queued") is rebuilt from the row. Nothing else is written, so the request costs about what
one idempotent insert costs.

Applying (the `integrations.inbox_apply` task, `inbox_apply`): one applier at a time (a
session advisory lock; a task that finds it taken returns at once) takes pending rows in id
order, up to APPLY_BATCH at a time, each batch in one transaction, through
integrations.inbound.events_ingest (set-based: a statement per step, not per event). An event
accepted after another was answered (a login after its sign-up's 202) has a larger id and is
applied after it; events sent concurrently may apply in either order. Each row ends applied
(its result: contact, activity, stale fields; its payload and names are cleared) or failed (its errors;
its payload stays for a retry from the admin). A batch that raises is applied again one event
at a time, so one bad event cannot hold back the rest; an error that says nothing about the
events (a lost connection, a deadlock, the task's time limit) leaves them pending instead.

Kicks: after each accepting commit, `inbox_kick` queues the task unless the flag says an
applier is queued or running (a Redis key set with NX, cleared by the applier once it finds
nothing to do, before a last look), so a busy API sends one task per drain, not one per
request. Under a stream of single events the applier lingers INBOX_APPLY_LINGER_MS after a
short batch so that the next one is larger. The beat sweep
(`integrations.inbox_sweep`) runs the task every few seconds for whatever a lost kick left
(broker down, worker killed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from itertools import groupby
from typing import Any, NamedTuple

import orjson
import psycopg
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, InterfaceError, NotSupportedError, OperationalError, connection, transaction
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.utils import timezone
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from compliance.models_privacy import Suppression
from compliance.suppression import KIND_NAMES, REFUSED, suppressed_values
from compliance.suppression import digest as suppression_digest
from contacts import services as contacts
from contacts.models import Contact
from crm_platform.actor import Actor, ActorKind
from crm_platform.api.fastjson import django_dumps, dumps
from crm_platform.errors import ConflictError
from crm_platform.redis import get_redis
from integrations import sync
from integrations.inbound import (
    EVENT_TYPES,
    Event,
    event_parse,
    event_refusals_record,
    events_ingest,
    outcome_errors,
)
from integrations.inbound_timeline import UNKNOWN_USER
from integrations.models import InboundEvent

logger = logging.getLogger(__name__)

APPLY_TASK = "integrations.tasks.inbox_apply"
APPLY_BATCH = 1000
KICK_FLAG = "crm:inbox:kick"
KICK_TTL_SECONDS = 30  # a kick whose task was lost stops holding others back after this long
_LOCK = 0x1B0C5E  # pg_try_advisory_lock key: one applier at a time
_TABLE = InboundEvent._meta.db_table
UNREADABLE = "The stored event could not be read (none, or a number beyond the range of a double)."
_CONTACTS = Contact._meta.db_table
# Both INSERTs of the inbox (many rows; one row with the user check) fill these columns.
_INSERT_INTO = (
    f"INSERT INTO {_TABLE} (owner, key, request_hash, route, type, user_external_id, user_email, "
    "creates_user, payload, actor, status, received_at) "
)


# ----------------------------------------------------------------------------- accepting


class Entry(NamedTuple):
    """One event to accept: its key (Idempotency-Key, or event:<id> in a batch), the hash of
    what was sent under it, and the parsed event."""

    key: str
    fingerprint: str
    event: Event


class Accepted(NamedTuple):
    """An inbox row for an entry: new (replayed False) or already there from an earlier request
    with the same key and body (replayed True). `mismatch`: the key was used with another body.
    (A named tuple, as Event: a batch makes a thousand.)"""

    id: int | None
    type: str
    route: str
    replayed: bool = False
    mismatch: bool = False


def inbox_refusals(events: list[Event]) -> dict[int, ValidationError | ConflictError]:
    """The events to refuse now, by index: a type that needs a known user naming nobody the CRM
    knows (no contact, no queued sign-up, no sign-up earlier in `events`); an email and a user
    id naming two different contacts; a new person whose email or phone is suppressed (erased,
    unsubscribed for good) unless the type is a sign-up, which lifts it. At most two queries,
    and none when no event can fail."""

    checked = [e for e in events if _needs_check(e)]
    if not checked:
        return {}
    emails = sorted({e.user["email"] for e in checked if "email" in e.user})
    externals = sorted({e.user["external_id"] for e in checked if "external_id" in e.user})
    by_email: dict[str, int] = {}
    by_external: dict[str, int] = {}
    queued: set[tuple[str, str]] = set()
    with _prepared_cursor() as cursor:
        # The identifiers travel as two JSON arrays (a thousand parameters cost more in Python).
        # A queued sign-up matters only for an identifier no contact has: those are probed one
        # at a time, after the contacts (a subquery per identifier, which the planner cannot
        # turn into a join, behind OFFSET 0, which it cannot push the probe under), for one row
        # at most. Joined to the identifiers, every pending sign-up came back (a backlog of page
        # views made the check three times dearer as it grew); joined by the planner, whose
        # statistics saw few pending rows, it hashed or walked every pending row.
        cursor.execute(_REFUSALS_SQL, [json.dumps(emails), json.dumps(externals)])
        for source, email, external_id, contact_id in cursor.fetchall():
            if source == "c":
                if email:
                    by_email[email] = contact_id
                if external_id:
                    by_external[external_id] = contact_id
            else:
                queued.add(("email", email) if email else ("external_id", external_id))

    def known_before(event: Event) -> bool:  # a contact, or a sign-up queued by an earlier request
        refs = set(event.user.items())
        return bool(
            by_email.get(event.user.get("email", ""))
            or by_external.get(event.user.get("external_id", ""))
            or refs & queued
        )

    # New people first (one query): a sign-up refused for suppression must not vouch for the
    # events after it in this request.
    suppressed = _suppressed([i for i, e in enumerate(events) if _may_be_suppressed(e) and not known_before(e)], events)
    refused: dict[int, ValidationError | ConflictError] = {}
    for index, event in enumerate(events):
        refs = set(event.user.items())
        email_contact = by_email.get(event.user.get("email", ""))
        external_contact = by_external.get(event.user.get("external_id", ""))
        if email_contact and external_contact and email_contact != external_contact and (conflict := _conflict(event)):
            refused[index] = conflict
        elif index in suppressed:
            refused[index] = suppressed[index]
        elif EVENT_TYPES[event.type].creates_user:
            queued |= refs  # later events in this request may name this user
        elif not (email_contact or external_contact or refs & queued):
            refused[index] = ValidationError({"user": [UNKNOWN_USER]})
    return refused


def _queued_sign_ups(column: str, ref: str) -> str:
    """SQL (FROM ... WHERE) of the queued sign-ups naming `ref` by `column` ("email" or
    "external_id"): the rows the partial indexes inbound_event_pend_email_idx and
    inbound_event_pend_ext_idx hold."""
    return (
        f"FROM {_TABLE} i WHERE i.user_{column} = {ref} AND i.status = 'pending' AND i.creates_user "
        f"AND i.user_{column} <> ''"
    )


def _queued_arm(refs: str, column: str, values: str) -> str:
    """inbox_refusals' UNION ALL arm for one kind of identifier (the CTE `refs`): those no
    contact has (`c`) and a queued sign-up names, as ('i', `values`, 0)."""
    return (
        f" UNION ALL SELECT 'i', {values}, 0 FROM (SELECT {refs}.ref, (SELECT true "  # noqa: S608 - our names
        f"{_queued_sign_ups(column, refs + '.ref')} LIMIT 1) AS q FROM {refs} "
        f"WHERE NOT EXISTS (SELECT 1 FROM c WHERE c.{column} = {refs}.ref) OFFSET 0) s WHERE q"
    )


# inbox_refusals' one statement: the contacts the identifiers name (emails `e`, app user ids
# `x`), then each identifier no contact has that a queued sign-up names.
_REFUSALS_SQL = (
    "WITH e AS (SELECT ref FROM jsonb_array_elements_text(%s::jsonb) AS v(ref)), "  # noqa: S608 - our names
    "x AS (SELECT ref FROM jsonb_array_elements_text(%s::jsonb) AS v(ref)), "
    f"c AS MATERIALIZED (SELECT email, external_id, coalesce(merged_into_id, id) AS id FROM {_CONTACTS} "
    "WHERE email = ANY(ARRAY(SELECT ref FROM e)) OR external_id = ANY(ARRAY(SELECT ref FROM x))) "
    "SELECT 'c', email, external_id, id FROM c"
    + _queued_arm("e", "email", "ref, NULL")
    + _queued_arm("x", "external_id", "NULL, ref")
)


def _needs_check(event: Event) -> bool:
    """Whether inbox_refusals has anything to look up for this event: a user it must know, two
    identifiers that may name two people, or a new person who may be suppressed."""
    return not EVENT_TYPES[event.type].creates_user or len(event.user) == 2 or _may_be_suppressed(event)


def _may_be_suppressed(event: Event) -> bool:
    kind = EVENT_TYPES[event.type]
    return kind.creates_user and not kind.lifts_suppression


def _conflict(event: Event) -> ConflictError | None:
    """The lookup above follows one merge; contacts.contact_find follows the whole chain to the
    survivors, and has the last word on whether the two identifiers name two people."""
    try:
        contacts.contact_find(email=event.user.get("email"), external_id=event.user.get("external_id"))
    except ConflictError as conflict:
        return conflict
    return None


def _suppressed(indices: list[int], events: list[Event]) -> dict[int, ValidationError]:
    """Of these events (new people), the ones whose email, phone or app user id is on the
    suppression list."""
    if not indices:
        return {}
    people = [events[i] for i in indices]
    hits = suppressed_values(
        emails=[e.user.get("email") for e in people],
        phones=[_phone(e) for e in people],
        external_ids=[e.user.get("external_id") for e in people],
    )
    refused = {}
    for index, event in zip(indices, people, strict=True):
        fields = {
            "email": event.user.get("email"),
            "phone": _phone(event),
            "external_id": event.user.get("external_id"),
        }
        errors = {
            name: [REFUSED.format(kind=KIND_NAMES[name])] for name, value in fields.items() if value and value in hits
        }
        if errors:
            refused[index] = ValidationError(errors)
    return refused


def _phone(event: Event) -> str | None:
    phone = event.properties.get("phone")
    return phone if isinstance(phone, str) and phone else None


def inbox_accept(*, owner: str, route: str, actor: Actor, entries: list[Entry]) -> list[Accepted]:
    """Write one pending row per entry (in order, so they apply in order) and kick the applier;
    one Accepted each. Entries whose key the owner used before are not written: same body, a
    replay of that row; another body, a mismatch. Call outside any transaction: each row is
    committed, and thus durable, before the caller answers 202."""
    if not entries:
        return []
    written: dict[str, int] = {}
    found: dict[str, tuple[int, str, str, str]] = {}
    todo = entries
    for _ in range(3):
        written |= _insert(owner, route, actor, todo)
        found |= _existing(owner, [e.key for e in todo if e.key not in written])
        # A key taken when we inserted but gone when we looked (retention purged its row): again.
        todo = [e for e in todo if e.key not in written and e.key not in found]
        if not todo:
            break
    else:
        raise OperationalError("inbox keys kept vanishing between insert and lookup")
    if written:
        transaction.on_commit(inbox_kick, robust=True)
    return [
        Accepted(written[entry.key], entry.event.type, route)
        if entry.key in written
        else _found(found[entry.key], entry.fingerprint)
        for entry in entries
    ]


def _insert(owner: str, route: str, actor: Actor, entries: list[Entry]) -> dict[str, int]:
    """INSERT the entries' rows in order, skipping keys already there: {key: id} of those written.

    The rows travel as one JSON array per column, written by orjson and read by PostgreSQL as
    `json`, which it only checks, then walked once each (ROWS FROM); only each payload is parsed,
    as the jsonb it is stored as. One jsonb document of rows cost PostgreSQL a full parse into
    jsonb first (~12 ms a thousand); a thousand parameters, or psycopg's arrays, cost Python more
    (its list dumpers pack each element in Python)."""
    columns = list(zip(*map(_row, entries), strict=True))
    with _prepared_cursor() as cursor:
        cursor.execute(
            _INSERT_INTO + "SELECT %s, u.k, u.h, %s, u.t, u.x, u.e, u.c::bool, u.p::jsonb, %s::jsonb, 'pending', %s "  # noqa: S608 - our names
            "FROM ROWS FROM (json_array_elements_text(%s::json), json_array_elements_text(%s::json), "
            "json_array_elements_text(%s::json), json_array_elements_text(%s::json), "
            "json_array_elements_text(%s::json), json_array_elements_text(%s::json), json_array_elements(%s::json)) "
            "WITH ORDINALITY AS u(k, h, t, x, e, c, p, n) ORDER BY u.n ON CONFLICT (owner, key) DO NOTHING "
            "RETURNING key, id",
            [owner, route, json.dumps(actor.to_task()), timezone.now(), *map(dumps, columns)],
        )
        return dict(cursor.fetchall())


def _row(entry: Entry) -> tuple:
    """The columns of an entry's inbox row that vary, in the order both INSERTs take them: key,
    request hash, type, the user's app id and email ("" when not given), creates_user, and the
    stored event (a dict, for the caller to write as JSON)."""
    event = entry.event
    return (
        entry.key,
        entry.fingerprint,
        event.type,
        event.user.get("external_id", ""),
        event.user.get("email", ""),
        EVENT_TYPES[event.type].creates_user,
        _stored(event),
    )


def inbox_accept_one(*, owner: str, route: str, actor: Actor, entry: Entry) -> Accepted:
    """Check one event and queue it: an Accepted (new, replayed or mismatch), or the refusal
    raised (ValidationError or ConflictError, recorded as a failed SyncEvent). A refused event
    looks its key up first, so an answered event replays even if it would be refused today.

    One statement in the common cases: an event named by one identifier is inserted by an
    INSERT carrying the check: the user is a contact, or their sign-up is queued, or (a
    sign-up-capable type with no phone) the identifier is not on the suppression list. A sign-up
    (account_created, which lifts suppression) has nothing to check. Otherwise the long way.
    """
    event = entry.event
    ref = next(iter(event.user.items())) if len(event.user) == 1 else None
    looked_up = False  # whether the key is known to be free (looked up since the INSERT skipped it)
    if ref is not None and _needs_check(event):
        written = _insert_if_known(owner, route, actor, entry, ref, newcomer_may_be=_newcomer_kind(event, ref))
        if written is not None:
            transaction.on_commit(inbox_kick, robust=True)
            return Accepted(written, event.type, route)
        earlier = inbox_find(owner=owner, key=entry.key, fingerprint=entry.fingerprint)
        if earlier is not None:
            return earlier
        looked_up = True
    refusal = inbox_refusals([event]).get(0)
    if refusal is not None:
        earlier = None if looked_up else inbox_find(owner=owner, key=entry.key, fingerprint=entry.fingerprint)
        if earlier is not None:
            return earlier
        event_refusals_record([(event, refusal)])
        raise refusal
    [accepted] = inbox_accept(owner=owner, route=route, actor=actor, entries=[entry])
    return accepted


def _newcomer_kind(event: Event, ref: tuple[str, str]) -> str | None:
    """For a sign-up-capable event named by one identifier and no phone: the suppression kind a
    newcomer's identifier is checked under in the same INSERT (_insert_if_known). None: a
    newcomer takes the long way (a type that needs a known user, or a phone to check too)."""
    if not _may_be_suppressed(event) or _phone(event):
        return None
    return Suppression.Kind.EMAIL if ref[0] == "email" else Suppression.Kind.EXTERNAL_ID


def _insert_if_known(
    owner: str, route: str, actor: Actor, entry: Entry, ref: tuple[str, str], newcomer_may_be: str | None = None
) -> int | None:
    """INSERT the row when its one identifier names a contact or a queued sign-up or, for
    `newcomer_may_be` (a suppression kind), a newcomer whose identifier is not suppressed; its
    id, or None (unknown or suppressed user, or the key is taken)."""
    column = "email" if ref[0] == "email" else "external_id"
    key, fingerprint, *rest, stored = _row(entry)
    newcomer, newcomer_params = "", []
    if newcomer_may_be is not None:
        newcomer = (
            f"OR NOT EXISTS (SELECT 1 FROM {Suppression._meta.db_table} "  # noqa: S608 - our names
            "WHERE kind = %s AND digest = %s AND lifted_at IS NULL) "
        )
        newcomer_params = [newcomer_may_be, suppression_digest(newcomer_may_be, ref[1])]
    with _prepared_cursor() as cursor:
        cursor.execute(
            _INSERT_INTO + "SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, 'pending', %s "  # noqa: S608 - our names
            f"WHERE EXISTS (SELECT 1 FROM {_CONTACTS} WHERE {column} = %s) "
            f"OR EXISTS (SELECT 1 {_queued_sign_ups(column, '%s')}) "
            f"{newcomer}ON CONFLICT (owner, key) DO NOTHING RETURNING id",
            [
                owner,
                key,
                fingerprint,
                route,
                *rest,
                dumps(stored),
                json.dumps(actor.to_task()),
                timezone.now(),
                ref[1],
                ref[1],
                *newcomer_params,
            ],
        )
        row = cursor.fetchone()
    return row[0] if row else None


@contextlib.contextmanager
def _prepared_cursor():
    """A Django cursor over a server-binding psycopg cursor: the statement is sent with its
    parameters apart and, with DB_PREPARED_STATEMENTS, prepared on the connection at first use,
    so PostgreSQL stops parsing and planning the hot INSERTs on every request (a single event's
    database time fell from ~0.65 to ~0.25 ms). Preparing is switched on for this cursor's
    statements only: on the whole connection, psycopg would also count every client-side
    query's text (parameters merged, hundreds of KB for the applier's) in its cache. Django's
    client-side cursors, the project default, merge the parameters into the statement's text:
    a batch's document was then quoted and hashed in Python and scanned as one SQL literal.

    After a migration changes the type of a column one of these statements returns (a longer
    varchar, say), PostgreSQL refuses each run of it on every connection that prepared it
    before ("cached plan must not change result type", SQLSTATE 0A000), and psycopg would go on
    sending it until the connection closed. Outside a transaction the refused statement changed
    nothing: the connection's statements are dropped and it is sent once more (prepared afresh)
    instead of answering the client 500."""
    connection.ensure_connection()
    raw = connection.connection
    if settings.DB_PREPARED_STATEMENTS:
        raw.prepare_threshold = 0  # prepare at first use
    try:
        wrapper = _DebugWrapper if connection.queries_logged else _Wrapper
        with wrapper(psycopg.Cursor(raw), connection) as cursor:
            yield cursor
    finally:
        raw.prepare_threshold = None  # as Django leaves it: nothing else is prepared or counted


class _Wrapper(CursorWrapper):
    def execute(self, sql, params=None):
        return _execute(self, sql, params)


class _DebugWrapper(CursorDebugWrapper):
    """With queries logged (DEBUG, tests): the statement as sent, its parameters apart. Django
    reads the executed text back from psycopg, which keeps none for a prepared statement."""

    def execute(self, sql, params=None):
        with self.debug_sql(sql, params):
            return _execute(self, sql, params)


_PLAN_CHANGED = "0A000"  # feature_not_supported: "cached plan must not change result type"


def _execute(cursor: CursorWrapper, sql: str, params) -> Any:
    """Execute; a prepared statement refused because a column it returns changed type is sent
    again, once, when no transaction is open (see _prepared_cursor)."""
    try:
        return CursorWrapper.execute(cursor, sql, params)
    except NotSupportedError as exc:
        if cursor.db.in_atomic_block or getattr(exc.__cause__, "sqlstate", None) != _PLAN_CHANGED:
            raise
    # psycopg keeps using a statement it prepared whatever the server answers; DEALLOCATE ALL
    # (which it reads as "forget them all") makes it prepare each one afresh.
    cursor.db.connection.execute("DEALLOCATE ALL", prepare=False)
    logger.info("the inbox statements were prepared again after a schema change")
    return CursorWrapper.execute(cursor, sql, params)


def inbox_find(*, owner: str, key: str, fingerprint: str) -> Accepted | None:
    """What an earlier request left under this key (replay or mismatch), or None."""
    return _found(_existing(owner, [key]).get(key), fingerprint)


def inbox_find_many(*, owner: str, entries: list[Entry]) -> dict[str, Accepted | None]:
    """inbox_find for many entries, in one query: key -> Accepted or None."""
    existing = _existing(owner, [entry.key for entry in entries])
    return {entry.key: _found(existing.get(entry.key), entry.fingerprint) for entry in entries}


def _found(row: tuple[int, str, str, str] | None, fingerprint: str) -> Accepted | None:
    if row is None:
        return None
    row_id, row_fingerprint, row_type, row_route = row
    if row_fingerprint != fingerprint:
        return Accepted(None, row_type, row_route, mismatch=True)
    return Accepted(row_id, row_type, row_route, replayed=True)


def _existing(owner: str, keys: list[str]) -> dict[str, tuple[int, str, str, str]]:
    if not keys:
        return {}
    rows = InboundEvent.objects.filter(owner=owner, key__in=keys).values_list(
        "key", "id", "request_hash", "type", "route"
    )
    return {key: rest for key, *rest in rows}


def _stored(event: Event) -> dict[str, Any]:
    """The event as the applier parses it again: the receipt time stands in for a missing
    occurred_at, so applying later changes nothing."""
    return {
        "type": event.type,
        "occurred_at": event.occurred_at,  # written by orjson (RFC 3339, as isoformat)
        "user": event.user,
        "properties": event.properties,
        "source": event.source,
    }


# Until when (time.monotonic) this process saw the kick flag set: its requests skip the Redis
# round trip meanwhile. Safe because the applier, having cleared the flag, waits as long before
# its last look (inbox_apply): an event whose request skipped its kick is committed by then.
_flag_seen_until = 0.0


def inbox_kick() -> None:
    """Ask a worker to apply the inbox now, unless a kick is already waiting. Best effort: with
    Redis or the broker down the rows wait in PostgreSQL for the sweep."""
    global _flag_seen_until
    from crm_platform.celery import app

    started = time.monotonic()
    if started < _flag_seen_until:
        return
    try:
        redis = get_redis()
        if redis.set(KICK_FLAG, "1", nx=True, ex=KICK_TTL_SECONDS):
            try:
                app.send_task(APPLY_TASK, queue="sync", expires=60, retry=False)
            except (KombuError, OSError):
                redis.delete(KICK_FLAG)  # let the next request try again
                raise
        _flag_seen_until = started + settings.INBOX_APPLY_LINGER_MS / 1000
    except (KombuError, RedisError, OSError) as exc:
        logger.warning("inbox apply kick not sent (%s); the sweep will apply", type(exc).__name__)


def _clear_kick() -> None:
    global _flag_seen_until
    _flag_seen_until = 0.0
    try:
        get_redis().delete(KICK_FLAG)
    except RedisError:
        pass  # the flag expires on its own


# ----------------------------------------------------------------------------- applying


def inbox_apply(
    *, budget_seconds: float = 50, batch: int = APPLY_BATCH, should_stop: Callable[[], bool] | None = None
) -> dict[str, int]:
    """Apply pending rows, a batch at a time, until none is left or the budget is spent.
    Returns {"applied", "failed", "batches"}.

    One applier at a time: a task that finds another holding the lock returns at once (so extra
    kicks and sweeps never hold worker slots). The holder looks once more after letting go of
    the lock, so a row whose kick found the lock still held is not left for the sweep."""
    counts = {"applied": 0, "failed": 0, "batches": 0}
    deadline = time.monotonic() + budget_seconds

    def stopped() -> bool:
        return time.monotonic() >= deadline or bool(should_stop and should_stop())

    while not stopped():
        if not _lock(connection):
            return counts  # another applier is at it
        try:
            _drain(batch, counts, stopped)
        finally:
            _unlock(connection)
        if not InboundEvent.objects.filter(status=InboundEvent.Status.PENDING).exists():
            break
    return counts


def _lock(conn) -> bool:
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK])
        return cursor.fetchone()[0]


def _unlock(conn) -> None:
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK])
    except DatabaseError:
        logger.warning("inbox applier lock not released; it goes with the connection")


def _drain(batch: int, counts: dict[str, int], stopped: Callable[[], bool]) -> None:
    linger = settings.INBOX_APPLY_LINGER_MS / 1000
    while not stopped():
        done = _apply_batch(batch)
        if done is None:
            # Nothing waits. Let the next accepted event kick again, then look once more: an
            # event committed before the flag went may have found it set (or remembered it set,
            # for up to the linger) and not kicked.
            _clear_kick()
            if linger:
                time.sleep(linger)
            done = _apply_batch(batch)
            if done is None:
                return
        counts["batches"] += 1
        for status in done.values():
            counts[status] += 1
        if len(done) < batch and linger:
            # A batch costs a dozen statements however small: under a stream of single events,
            # let a few more arrive (the flag is still set, so their requests send no kick).
            time.sleep(linger)


# Errors that say nothing about the event: the batch rolls back and its rows stay pending for
# the next run, instead of being marked failed.
_TRANSIENT = (OperationalError, InterfaceError, SoftTimeLimitExceeded)


class _Withdrawn(Exception):
    """Rows of the batch were deleted (an erasure took the person's queued events) while it
    ran: what it did for them must not stay, so the batch is rolled back and read again."""


def _apply_batch(limit: int) -> dict[int, str] | None:
    """One batch in one transaction: {row id: "applied" | "failed"}, or None when none waits.
    The caller holds the applier's lock. The rows are read without a lock, so an erasure may
    delete some meanwhile (a queued sign-up would bring the person back): then the batch is
    rolled back and taken again, without them."""
    for _ in range(3):
        try:
            return _apply_batch_once(limit)
        except _Withdrawn:
            logger.info("inbox rows were erased while their batch ran; applying the batch again")
    raise OperationalError("inbox rows kept being erased while their batch ran")


def _apply_batch_once(limit: int) -> dict[int, str] | None:
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Read as text and parsed by orjson: the ORM's JSONField parses with json.loads.
            cursor.execute(
                f"SELECT id, payload::text, actor::text FROM {_TABLE} WHERE status = 'pending' ORDER BY id LIMIT %s",  # noqa: S608
                [limit],
            )
            rows = [(row_id, payload, orjson.loads(actor)) for row_id, payload, actor in cursor.fetchall()]
        if not rows:
            return None
        try:
            with transaction.atomic():
                ends = _ingest(rows)
        except _TRANSIENT:
            raise
        except Exception:
            logger.exception("inbox rows %s-%s failed together; applying them one at a time", rows[0][0], rows[-1][0])
            ends = {}
            for row in rows:
                try:
                    with transaction.atomic():
                        ends.update(_ingest([row]))
                except _TRANSIENT:
                    raise
                except Exception as exc:  # this event's own fault: recorded on its row
                    logger.exception("inbox row %s failed", row[0])
                    message = f"Internal error ({type(exc).__name__}); see the server log."
                    ends[row[0]] = (InboundEvent.Status.FAILED, {"errors": {"non_field_errors": [message]}})
                    _failures_log([(row, type(exc).__name__)])  # its sync row went with the savepoint
        if _mark(ends) != len(ends):
            raise _Withdrawn
    return {row_id: status for row_id, (status, _) in ends.items()}


def _ingest(rows: list[tuple[int, str | None, list]]) -> dict[int, tuple[str, dict]]:
    """Parse the rows' events again (their payloads' text) and apply them, consecutive rows of
    one sender together. A row that no longer parses fails alone."""
    ends: dict[int, tuple[str, dict]] = {}
    parsed: list[tuple[int, Event, list]] = []
    unparsed = []
    for row in rows:
        row_id, payload, actor = row
        try:
            parsed.append((row_id, event_parse(_loads(payload)), actor))
        except ValidationError as exc:  # the type's schema changed since the event was accepted
            ends[row_id] = (InboundEvent.Status.FAILED, {"errors": outcome_errors(exc)})
            unparsed.append((row, sync.error_summary(exc)))
    _failures_log(unparsed)
    for _, group in groupby(parsed, key=lambda row: tuple(row[2][:2])):
        group = list(group)
        outcomes = events_ingest(events=[event for _, event, _ in group], actor=_sender([a for *_, a in group]))
        for (row_id, _, _), outcome in zip(group, outcomes, strict=True):
            if outcome.status == "accepted":
                ends[row_id] = (InboundEvent.Status.APPLIED, outcome.result)
            else:
                ends[row_id] = (InboundEvent.Status.FAILED, {"errors": outcome_errors(outcome.error)})
    return ends


def _failures_log(failures: list[tuple[tuple[int, str | None, list], str]]) -> None:
    """Failed SyncEvents for rows that failed outside events_ingest, which logs the others: a
    stored payload that no longer reads or parses, an internal error. The sync log records how
    every inbound event ended; the digest is of the stored text, the error names no value."""
    if not failures:
        return
    stored = dict(InboundEvent.objects.filter(pk__in=[row[0] for row, _ in failures]).values_list("pk", "type"))
    logged = []
    for (row_id, payload, _), error in failures:
        try:
            envelope = orjson.loads(payload) if payload is not None else None
        except orjson.JSONDecodeError:
            envelope = None
        envelope = envelope if isinstance(envelope, dict) else {}
        user = envelope.get("user") if isinstance(envelope.get("user"), dict) else {}
        logged.append(
            sync.inbound_row(
                provider=str(envelope.get("source") or "app"),
                event_type=stored.get(row_id, ""),
                payload=payload,
                status=sync.SyncEvent.Status.FAILED,
                external_id=str(user.get("external_id") or ""),
                error=error,
            )
        )
    sync.sync_events_record_many(logged)


def _loads(payload: str | None) -> Any:
    """A stored payload, parsed; ValidationError when there is none, or one orjson cannot read
    (a number beyond a double's range, as an older version or a hand edit could leave)."""
    try:
        return orjson.loads(payload)
    except (orjson.JSONDecodeError, TypeError):
        raise ValidationError({"non_field_errors": [UNREADABLE]}) from None


def _sender(actors: list[list]) -> Actor:
    """The actor a group of rows is applied as: their sender, with the request id and address
    they share (rows from several requests keep theirs on the inbox row, not in the audit)."""
    kind, actor_id, request_id, ip = actors[0]
    if any(a[2] != request_id for a in actors):
        request_id = f"inbox-{len(actors)}-{request_id}"[:64]
    if any(a[3] != ip for a in actors):
        ip = None
    return Actor(ActorKind(kind), str(actor_id), request_id, ip)


def _mark(ends: dict[int, tuple[str, dict]]) -> int:
    """How each row ended, in one UPDATE; returns how many rows it found (fewer than `ends`:
    some were deleted meanwhile). An applied row keeps no personal data: its payload and
    the user's names are cleared (its result names the contact by id), so GDPR erasure has only
    queued and failed rows to find, by their partial indexes."""
    document = [{"i": row_id, "s": status, "r": result} for row_id, (status, result) in ends.items()]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_TABLE} AS t SET status = u.s, result = u.r, applied_at = %s, "  # noqa: S608
            "payload = CASE WHEN u.s = 'applied' THEN NULL ELSE t.payload END, "
            "user_email = CASE WHEN u.s = 'applied' THEN '' ELSE t.user_email END, "
            "user_external_id = CASE WHEN u.s = 'applied' THEN '' ELSE t.user_external_id END "
            "FROM jsonb_to_recordset(%s::jsonb) AS u(i bigint, s text, r jsonb) WHERE t.id = u.i",
            [timezone.now(), django_dumps(document)],
        )
        return cursor.rowcount


def inbox_retry(*, ids, actor: Actor) -> int:
    """Failed rows back to pending, audited (the admin's "apply again"); returns how many."""
    from compliance.services import audit_record_many

    with transaction.atomic():
        reset = list(
            InboundEvent.objects.select_for_update()
            .filter(pk__in=list(ids), status=InboundEvent.Status.FAILED, payload__isnull=False)
            .values_list("pk", flat=True)
        )
        InboundEvent.objects.filter(pk__in=reset).update(
            status=InboundEvent.Status.PENDING, result=None, applied_at=None
        )
        if reset:
            audit_record_many(
                actor=actor,
                action="inbox.retry",
                object_type=InboundEvent._meta.label_lower,
                rows=[(pk, {}) for pk in reset],
            )
            transaction.on_commit(inbox_kick, robust=True)
    return len(reset)
