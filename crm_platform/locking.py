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
