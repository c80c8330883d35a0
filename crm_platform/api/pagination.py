from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    """Cursor pagination everywhere: stable under inserts, no COUNT(*) on large tables.

    Views order by `ordering` (newest first by default); clients pass `?limit=` up to 200."""

    ordering = "-id"  # a column name, so rows read with .values() paginate too
    page_size_query_param = "limit"
    max_page_size = 200


class TimelinePagination(CursorPagination):
    """Timelines: newest event first (ties by id)."""

    ordering = ("-occurred_at", "-id")
