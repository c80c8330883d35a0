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
