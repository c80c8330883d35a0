"""Ceiling views: the least a request can cost on this machine, measured in the same run as our
figure so the report can give a ratio (DESIGN.md, "Ceilings measured on this kind of machine").

They sit behind the same middleware as the product and are routed only by bench.urls.
"""

import uuid

from django.db import connection
from django.http import JsonResponse
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

TABLE = "bench_ceiling"


def ensure_ceiling_table() -> None:
    """Create the table the one-insert view writes to (outside migrations: it is not the product's)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now())"
        )


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
