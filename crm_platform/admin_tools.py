"""Admin plumbing shared by every app's ModelAdmins: changelists that stay fast on a million
rows, and the actor of an admin request."""

from __future__ import annotations

from functools import cached_property

from django.core.paginator import Paginator
from django.db import connection

# Past this many matches a filtered changelist says "more than N" instead of counting them all.
COUNT_CAP = 10_000


class EstimatedCountPaginator(Paginator):
    """No full-table COUNT(*): an unfiltered changelist uses PostgreSQL's own estimate of the
    table's size (pg_class.reltuples, kept by ANALYZE and autovacuum); a filtered one counts
    at most COUNT_CAP + 1 rows."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        query = getattr(queryset, "query", None)
        if query is None:
            return len(queryset)
        if not query.where and not query.distinct:
            estimate = _estimate(queryset.model._meta.db_table)
            if estimate is not None and estimate > COUNT_CAP:
                return estimate
        return queryset.order_by()[: COUNT_CAP + 1].count()


def _estimate(table: str) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] >= 0 else None


class FastChangeListMixin:
    """For ModelAdmins of big tables."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50
