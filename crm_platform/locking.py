"""Row locks taken by services on an object their caller loaded moments before."""

from __future__ import annotations

from typing import TypeVar

from django.db.models import Model, QuerySet
from django.http import Http404

M = TypeVar("M", bound=Model)


def locked_row(queryset: QuerySet[M], pk) -> M:
    """The row `pk` of `queryset` (a select_for_update() queryset, so locked as it says), read
    again under the lock. Http404 when it is gone: deleted, erased or merged away by a request
    that held the lock first (a DoesNotExist there was a 500 for the API's caller)."""
    row = queryset.filter(pk=pk).first()
    if row is None:
        raise Http404(f"No {queryset.model._meta.verbose_name} {pk}.")
    return row


def row_held(model: type[Model], pk) -> None:
    """Hold the row `pk` of `model` (FOR KEY SHARE) until the transaction ends, before rows are
    hung on it: a delete (an erasure) or a merge (FOR UPDATE) waits for the caller, and one that
    held the row first has committed when this returns. Http404 when the row is gone: a foreign
    key to it, checked at COMMIT, failed there (a 500). Writes to the row itself (NO KEY UPDATE)
    are not held back."""
    from django.db import connection

    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(model._meta.pk.column)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {table} WHERE {column} = %s FOR KEY SHARE", [pk])  # noqa: S608 - model names
        if cursor.fetchone() is None:
            raise Http404(f"No {model._meta.verbose_name} {pk}.")
