"""The audit hash chain: sealing, verification and retention purge.

Writers insert audit rows unsealed (chain_seq and hash NULL) in their own transactions, so no
writer waits for another. `audit_seal` later gives the committed unsealed rows, in id order,
the next sequence numbers and `hash = sha256(previous hash + canonical row)`; only one sealer
runs at a time (a PostgreSQL advisory lock). The database triggers of migration 0003 allow that
single change and refuse every other UPDATE, every DELETE but retention's, and TRUNCATE.

The canonical row is built by PostgreSQL (`_CANONICAL`): a JSON array of every column but the
hash, with the time as integer microseconds since the epoch (independent of the session's time
zone) and the changes as jsonb's own text form (keys sorted, deterministic). Python only chains
the sha256 over rows streamed in big batches.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from compliance.models import AUDIT_COLUMNS, AuditChainState, AuditEvent

logger = logging.getLogger(__name__)

TABLE = AuditEvent._meta.db_table
# The value hashed before the first row of a chain that has never been purged.
GENESIS = "0" * 64
# pg_try_advisory_xact_lock key: "audit seal" as a number; one sealer at a time.
SEAL_LOCK = 0x61756469745F7365
SEAL_BATCH = 50_000
# The database refuses to delete audit rows younger than this (trigger in migration 0003);
# AUDIT_RETENTION_DAYS can only lengthen it.
RETENTION_FLOOR_DAYS = 2190

_CANONICAL = (
    "jsonb_build_array(a.id, a.chain_seq, "
    "(extract(epoch from a.occurred_at) * 1000000)::bigint, a.actor_kind, a.actor_id, a.action, "
    "a.object_type, a.object_id, a.subject_id, a.changes, a.request_id, host(a.ip))::text"
)

_COLUMNS = ", ".join(f"b.{c}" for c in AUDIT_COLUMNS if c not in ("chain_seq", "hash"))


def _link(previous: str, canonical: str) -> str:
    return hashlib.sha256((previous + canonical).encode()).hexdigest()


def _head(cursor) -> tuple[int, str]:
    """The last sealed row's (seq, hash), or the purge checkpoint's, or the genesis."""
    cursor.execute(f"SELECT chain_seq, hash FROM {TABLE} WHERE chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1")  # noqa: S608
    row = cursor.fetchone()
    if row:
        return row[0], row[1]
    state = AuditChainState.objects.filter(pk=1).values_list("checkpoint_seq", "checkpoint_hash").first()
    if state and state[0] is not None:
        return state[0], state[1]
    return 0, GENESIS


def audit_seal(*, batch_size: int = SEAL_BATCH, max_rows: int | None = None) -> int:
    """Seal the committed unsealed audit rows in id order; return how many were sealed.

    Each batch is one transaction holding the seal advisory lock: it reads the chain's head,
    hashes up to `batch_size` rows in Python and writes them with one UPDATE ... FROM unnest.
    If another sealer holds the lock, returns at once (that sealer does the work). Safe to run
    at any time and any number of times.
    """
    sealed = 0
    while max_rows is None or sealed < max_rows:
        limit = batch_size if max_rows is None else min(batch_size, max_rows - sealed)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEAL_LOCK])
            if not cursor.fetchone()[0]:
                return sealed
            seq, previous = _head(cursor)
            # The next sequence numbers are numbered by PostgreSQL, so the canonical text
            # hashed here is exactly the one audit_verify reads back.
            cursor.execute(
                f"SELECT a.id, a.chain_seq, {_CANONICAL} FROM (SELECT {_COLUMNS}, "  # noqa: S608
                "%s + row_number() OVER (ORDER BY b.id) AS chain_seq "
                f"FROM (SELECT * FROM {TABLE} WHERE chain_seq IS NULL ORDER BY id LIMIT %s) b) a ORDER BY a.id",
                [seq, limit],
            )
            rows = cursor.fetchall()
            if not rows:
                return sealed
            ids, hashes = [], []
            for row_id, _, canonical in rows:
                previous = _link(previous, canonical)
                ids.append(str(row_id))
                hashes.append(previous)
            # Rows come in id order and were numbered seq + 1, seq + 2, ...: the n-th id gets
            # seq + n. Ids and hashes travel as two comma-joined strings: quoting three Python
            # lists of 50,000 elements element by element cost a sixth of the sealing time.
            # The id range keeps the join on the primary key's range, not a scan of the whole log.
            cursor.execute(
                f"UPDATE {TABLE} a SET chain_seq = %s + u.n, hash = u.hash "  # noqa: S608
                "FROM unnest(string_to_array(%s, ','), string_to_array(%s, ',')) WITH ORDINALITY AS u(id, hash, n) "
                "WHERE a.id = u.id::bigint AND a.id BETWEEN %s AND %s",
                [seq, ",".join(ids), ",".join(hashes), rows[0][0], rows[-1][0]],
            )
        sealed += len(rows)
        if len(rows) < limit:
            return sealed
    return sealed


@dataclass(frozen=True)
class ChainBreak:
    seq: int | None
    id: int | None
    expected: str
    found: str
    reason: str

    def __str__(self) -> str:
        return (
            f"audit chain broken at seq {self.seq} (id {self.id}): {self.reason}; "
            f"expected {self.expected}, found {self.found}"
        )


@dataclass(frozen=True)
class VerifyResult:
    checked: int
    head_seq: int
    head_hash: str
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def audit_verify() -> VerifyResult:
    """Check the whole sealed chain in one pass inside PostgreSQL: every row's hash must equal
    sha256(the previous row's stored hash + this row's canonical text) and every seq the
    previous one plus one, the first row following the purge checkpoint (or the genesis).

    Checking each link against the stored previous hash finds the same first break as
    recomputing the chain from the start (up to the first bad link both agree), without
    shipping a million rows to Python. Returns the first broken link, if any."""
    state = AuditChainState.objects.filter(pk=1).values_list("checkpoint_seq", "checkpoint_hash").first()
    start_seq, start_hash = (state[0], state[1]) if state and state[0] is not None else (0, GENESIS)
    links = (
        f"SELECT a.chain_seq AS seq, a.id, a.hash, "  # noqa: S608
        f"coalesce(lag(a.chain_seq) OVER w, %(start_seq)s) + 1 AS expected_seq, "
        f"encode(sha256(convert_to(coalesce(lag(a.hash) OVER w, %(start_hash)s) || {_CANONICAL}, 'UTF8')), 'hex') "
        f"AS expected FROM {TABLE} a WHERE a.chain_seq IS NOT NULL WINDOW w AS (ORDER BY a.chain_seq)"
    )
    params = {"start_seq": start_seq, "start_hash": start_hash}
    with transaction.atomic(), connection.cursor() as cursor:
        # One snapshot for both statements (REPEATABLE READ would do too; the chain only grows).
        cursor.execute(
            f"SELECT count(*), max(seq), min(seq) FILTER (WHERE seq <> expected_seq OR hash <> expected) "  # noqa: S608
            f"FROM ({links}) v",
            params,
        )
        checked, head_seq, broken_seq = cursor.fetchone()
        if broken_seq is None:
            head_hash = start_hash
            if head_seq is not None:
                cursor.execute(f"SELECT hash FROM {TABLE} WHERE chain_seq = %s", [head_seq])  # noqa: S608
                head_hash = cursor.fetchone()[0]
            return VerifyResult(checked, head_seq or start_seq, head_hash, None)
        cursor.execute(
            f"SELECT seq, id, hash, expected_seq, expected FROM ({links}) v WHERE seq = %(broken)s",  # noqa: S608
            {**params, "broken": broken_seq},
        )
        seq, row_id, found, expected_seq, expected = cursor.fetchone()
    if seq != expected_seq:
        broken = ChainBreak(seq, row_id, f"seq {expected_seq}", f"seq {seq}", "gap")
    else:
        broken = ChainBreak(seq, row_id, expected, found, "hash mismatch")
    return VerifyResult(checked, seq - 1, "", broken)


def audit_retention_cutoff(*, now=None):
    """Audit rows older than this may be purged: AUDIT_RETENTION_DAYS ago, never less than the
    database's six-year floor (legal holds are applied by audit_purge)."""
    now = now or timezone.now()
    days = int(settings.AUDIT_RETENTION_DAYS)
    if days < RETENTION_FLOOR_DAYS:
        logger.warning("AUDIT_RETENTION_DAYS below the six-year floor; using %s days", RETENTION_FLOOR_DAYS)
        days = RETENTION_FLOOR_DAYS
    return now - timedelta(days=days)


def _held_contact_ids() -> list[int]:
    # Legal holds live in compliance too (compliance.models.LegalHold, when present).
    from django.apps import apps

    try:
        model = apps.get_model("compliance", "LegalHold")
    except LookupError:
        return []
    queryset = model.objects.all()
    if hasattr(model, "released_at"):
        queryset = queryset.filter(released_at__isnull=True)
    return list(queryset.values_list("contact_id", flat=True))


def audit_purge(*, batch_size: int = SEAL_BATCH, now=None) -> int:
    """Delete sealed audit rows past the retention cutoff, oldest first, in batches; the
    trigger checks each batch continues the chain from its checkpoint and moves the checkpoint.
    Stops at the first row (in chain order) that is not old enough or is about a contact under
    an active legal hold: a hold keeps its contact's whole trail and, the chain being purged
    only from its start, everything after it. Returns rows deleted."""
    cutoff = audit_retention_cutoff(now=now)
    held = _held_contact_ids()
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEAL_LOCK])
            if not cursor.fetchone()[0]:
                return deleted
            # The contiguous run of old rows at the start of the chain (a younger row stops it).
            cursor.execute(
                f"WITH head AS (SELECT chain_seq, occurred_at, subject_id FROM {TABLE} "  # noqa: S608
                "WHERE chain_seq IS NOT NULL ORDER BY chain_seq LIMIT %s), "
                "stop AS (SELECT min(chain_seq) AS seq FROM head "
                "WHERE occurred_at >= %s OR subject_id = ANY(%s::bigint[])) "
                f"DELETE FROM {TABLE} a USING head WHERE a.chain_seq = head.chain_seq "
                "AND head.chain_seq < coalesce((SELECT seq FROM stop), 9223372036854775807)",
                [batch_size, cutoff, held],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch_size:
            return deleted
