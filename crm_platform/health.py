"""/healthz: the process lives. /readyz: the node may take traffic.

readyz answers 503 naming the cause when PostgreSQL does not answer or a migration is not
applied; 200 "degraded" when only Redis is down, because writes still land in PostgreSQL
and wait in the outbox (taking every node out for a Redis outage would make it an outage).
"""

from __future__ import annotations

import logging
from functools import lru_cache

from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from crm_platform.api.errors import error_body
from crm_platform.redis import get_redis

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _migrations_on_disk() -> frozenset[tuple[str, str]]:
    # The code of a running process does not change, so its migrations are read once.
    return frozenset(MigrationLoader(None, ignore_no_migrations=True).graph.nodes)


def _check_database() -> tuple[str, int]:
    """('ok'|'down', number of unapplied migrations)."""
    try:
        applied = set(MigrationRecorder(connection).applied_migrations())
    except Exception:
        logger.warning("readiness: database does not answer")
        connection.close()
        return "down", 0
    return "ok", len(_migrations_on_disk() - applied)


def _check_redis() -> str:
    try:
        get_redis().ping()
    except Exception:
        logger.warning("readiness: redis does not answer")
        return "down"
    return "ok"


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    database, pending = _check_database()
    redis = _check_redis()
    body = {
        "database": database,
        "migrations": "unknown" if database == "down" else ("pending" if pending else "ok"),
        "redis": redis,
    }
    if database == "down":
        problem = "PostgreSQL does not answer."
    elif pending:
        problem = f"{pending} migration(s) not applied."
        body["pending_migrations"] = pending
    else:
        body["status"] = "ok" if redis == "ok" else "degraded"
        return JsonResponse(body)
    body["status"] = "unavailable"
    body.update(error_body("not_ready", problem))
    return JsonResponse(body, status=503)
