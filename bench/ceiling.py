"""Ceiling views: the least a request can cost on this machine, measured in the same run as our
figure so the report can give a ratio (DESIGN.md, "Ceilings measured on this kind of machine").

They sit behind the same middleware as the product and are routed only by bench.urls.
"""

import functools
import json
import uuid

from django.db import connection
from django.http import JsonResponse
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

TABLE = "bench_ceiling"


UPSERT_TABLE = "bench_ceiling_contact"


def ensure_ceiling_table() -> None:
    """Create the table the one-insert view writes to (outside migrations: it is not the product's)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now())"
        )


def ensure_upsert_ceiling_table() -> None:
    """An empty copy of contacts_contact (columns, checks, indexes, identity; no foreign keys) for
    the bulk upsert ceiling, made afresh each run so every run starts alike."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {UPSERT_TABLE}")
        cursor.execute(f"CREATE TABLE {UPSERT_TABLE} (LIKE contacts_contact INCLUDING ALL)")


def plain_django(request):
    return JsonResponse({"ok": True})


class PlainDrfApi(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    def get(self, request):
        return Response({"ok": True})


class OneInsertApi(APIView):
    """One idempotent insert in its own transaction (autocommit), like a single ingested event."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    def post(self, request):
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {TABLE} (id) VALUES (%s) ON CONFLICT DO NOTHING", [uuid.uuid4().hex])  # noqa: S608
        return Response({"ok": True})


_EMPTY = {"jsonb": "'{}'", "ARRAY": "'{}'", "boolean": "false", "timestamp with time zone": "now()", "date": "now()"}


@functools.cache
def _bulk_upsert_sql() -> str:
    """INSERT ... SELECT FROM unnest(emails, first names) ON CONFLICT (email) DO UPDATE, giving every
    other NOT NULL column of the copy its type's empty value (worked out once per process)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s "
            "AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO' ORDER BY ordinal_position",
            [UPSERT_TABLE],
        )
        others = [(c, t) for c, t in cursor.fetchall() if c not in ("email", "first_name")]
    numeric = ("smallint", "integer", "bigint", "numeric", "double precision", "real")
    values = [_EMPTY.get(t, "0" if t in numeric else "''") for _, t in others]
    columns = ", ".join(["email", "first_name", *(c for c, _ in others)])
    return (
        f"INSERT INTO {UPSERT_TABLE} ({columns}) "  # noqa: S608 - names from the catalog
        f"SELECT e, f, {', '.join(values)} FROM unnest(%s::text[], %s::text[]) AS t(e, f) "
        "ON CONFLICT (email) WHERE email IS NOT NULL DO UPDATE SET first_name = EXCLUDED.first_name"
    )


class BulkUpsertCeilingApi(APIView):
    """Up to 1,000 contacts ({"contacts": [{"email", "first_name"}, ...]}) upserted by email with
    json.loads and one INSERT ... SELECT FROM unnest(...): the least a bulk upsert can cost."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    def post(self, request):
        rows = json.loads(request.body)["contacts"]
        emails = [row["email"].strip().lower() for row in rows]
        names = [row.get("first_name", "") for row in rows]
        with connection.cursor() as cursor:
            cursor.execute(_bulk_upsert_sql(), [emails, names])
        return Response({"upserted": len(rows)})


class EventsUnnestCeilingApi(APIView):
    """Up to 1,000 events ({"events": [{"id", ...}, ...]}) inserted one row each with json.loads and
    one INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING: the least a batch of events can
    cost (DESIGN.md, "Ceilings")."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    def post(self, request):
        events = json.loads(request.body)["events"]
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {TABLE} (id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                [[str(event["id"]) for event in events]],
            )
        return Response({"inserted": len(events)})


# The rows one timeline event must write, whatever the code: its activity, its audit row, its
# sync log row and its inbox row, which is also its stored Idempotency-Key (copies of the real
# tables, indexes included).
EVENT_WRITE_TABLES = {
    "bench_ceiling_activity": "contacts_activity",
    "bench_ceiling_audit": "compliance_auditevent",
    "bench_ceiling_sync": "integrations_syncevent",
    "bench_ceiling_inbox": "integrations_inboundevent",
}


def ensure_event_write_tables() -> None:
    """Empty copies (columns, checks, indexes, identity; no triggers or foreign keys) of the
    tables an event writes, made afresh each run."""
    with connection.cursor() as cursor:
        for copy, table in EVENT_WRITE_TABLES.items():
            cursor.execute(f"DROP TABLE IF EXISTS {copy}")
            cursor.execute(f"CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)")


@functools.cache
def _event_write_sql(copies: tuple[str, ...]) -> list[str]:
    """One INSERT ... SELECT FROM jsonb_to_recordset per copy: the event's id in every text column
    (so unique keys hold), its properties in every JSON column, empty values elsewhere."""
    statements = []
    with connection.cursor() as cursor:
        for copy in copies:
            cursor.execute(
                "SELECT column_name, data_type, coalesce(character_maximum_length, 200) FROM "
                "information_schema.columns WHERE table_schema = current_schema() AND table_name = %s "
                "AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO' ORDER BY ordinal_position",
                [copy],
            )
            rows = cursor.fetchall()
            columns = [(c, t) for c, t, _ in rows]
            values = [
                f"right(e.id, {n})" if t in ("character varying", "text") else "e.p" if t == "jsonb" else _empty(t)
                for _, t, n in rows
            ]
            statements.append(
                f"INSERT INTO {copy} ({', '.join(c for c, _ in columns)}) "  # noqa: S608 - names from the catalog
                f"SELECT {', '.join(values)} FROM jsonb_to_recordset(%s::jsonb) AS e(id text, p jsonb)"
            )
    return statements


def _empty(data_type: str) -> str:
    numeric = ("smallint", "integer", "bigint", "numeric", "double precision", "real")
    return _EMPTY.get(data_type, "0" if data_type in numeric else "''")


class EventWritesCeilingApi(APIView):
    """Up to 1,000 events: json.loads and, in one transaction, one INSERT per table an event must
    write (activity, audit, sync log, inbox row) into empty copies of those tables. What the
    required rows cost on this machine, with no lookup, no logic and no contact touch: the least
    accepting and applying a batch can cost (DESIGN.md's unnest ceiling writes one narrow row)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []
    copies: tuple[str, ...] = tuple(EVENT_WRITE_TABLES)

    def post(self, request):
        from django.db import transaction

        events = json.loads(request.body)["events"]
        document = json.dumps([{"id": str(e["id"]), "p": e.get("properties") or {}} for e in events])
        with transaction.atomic(), connection.cursor() as cursor:
            for sql in _event_write_sql(self.copies):
                cursor.execute(sql, [document])
        return Response({"inserted": len(events)})


class InboxWriteCeilingApi(EventWritesCeilingApi):
    """The row accepting an event must write, its inbox row (an empty copy of the inbox table,
    its indexes included), with json.loads and nothing else: the least the batch endpoint's
    acceptance can cost for the rows it keeps (no parsing of the events, no user check)."""

    copies = ("bench_ceiling_inbox",)
