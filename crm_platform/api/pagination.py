from base64 import b64decode, b64encode
from datetime import UTC, datetime
from urllib import parse

from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import F, Q
from django.db.models.fields.tuple_lookups import Tuple, TupleGreaterThan, TupleLessThan
from django.utils import timezone
from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.utils.urls import remove_query_param, replace_query_param


class CursorPagination(pagination.CursorPagination):
    """Cursor pagination everywhere: stable under inserts, no COUNT(*) on large tables.

    Views order by `ordering` (newest first by default); clients pass `?limit=` up to 200.

    A keyset cursor, not DRF's (first ordering field plus an offset, which repeats or skips rows
    when one is inserted among rows sharing that field's value): the cursor carries the value of
    every ordering field of the row at the page's edge, ending with the id (appended when the
    ordering lacks it), and the next page is the rows after it, `(a, b, id) < (x, y, z)`, a row
    comparison an index on those columns (after any equality prefix) serves. All ordering fields
    go one way and are never null."""

    ordering = "-id"  # a column name, so rows read with .values() paginate too
    page_size_query_param = "limit"
    max_page_size = 200
    invalid_cursor_message = "Not a cursor of this list: pass back a `next` or `previous` link as it was given."

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.page_size = self.get_page_size(request)
        if not self.page_size:
            return None
        self.base_url = request.build_absolute_uri()
        self.ordering = self.get_ordering(request, queryset, view)
        self.fields = [self._field(queryset.model, name.lstrip("-")) for name in self.ordering]
        self.cursor = self.decode_cursor(request)
        reverse, position = self.cursor if self.cursor is not None else (False, None)

        if reverse:
            queryset = queryset.order_by(*pagination._reverse_ordering(self.ordering))
        else:
            queryset = queryset.order_by(*self.ordering)
        if position is not None:
            descending = self.ordering[0].startswith("-")
            queryset = queryset.filter(self._after(position, before=reverse != descending))

        rows = list(queryset[: self.page_size + 1])
        self.page = rows[: self.page_size]
        more = len(rows) > self.page_size
        if reverse:
            self.page.reverse()
        # The edges of this page are the positions of the neighbouring pages. A page read
        # backwards always has one after it (where it came from); one read forwards from a
        # cursor, one before it. An empty page (its rows deleted meanwhile) points to the start
        # or the end of the list.
        self.has_next = position is not None if reverse else more
        self.has_previous = more if reverse else position is not None
        self.next_position = self._position(self.page[-1]) if self.page else None
        self.previous_position = self._position(self.page[0]) if self.page else None
        self.display_page_controls = (self.has_previous or self.has_next) and self.template is not None
        return self.page

    def get_next_link(self):
        if not self.has_next:
            return None
        if self.next_position is None:
            return remove_query_param(self.base_url, self.cursor_query_param)
        return self.encode_cursor((False, self.next_position))

    def get_previous_link(self):
        if not self.has_previous:
            return None
        return self.encode_cursor((True, self.previous_position))

    def get_ordering(self, request, queryset, view):
        ordering = super().get_ordering(request, queryset, view)
        last = ordering[-1].lstrip("-")
        if last not in ("id", "pk"):  # a unique last field, so every row has a position of its own
            ordering = (*ordering, "-id" if ordering[0].startswith("-") else "id")
        assert len({name.startswith("-") for name in ordering}) == 1, (
            "Keyset pagination needs every ordering field sorted the same way."
        )
        return ordering

    def decode_cursor(self, request):
        """(reverse, position or None). A cursor that is not one of ours (not base64 of our
        tokens, a direction other than 0 or 1, a position for another ordering, a value its
        field does not read) is bad input: ValidationError naming `cursor` (400), not DRF's
        NotFound (404: the list is there), and never a value that reaches the database."""
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        try:
            text = b64decode(encoded.encode("ascii"), validate=True).decode("ascii")
            tokens: dict[str, list[str]] = {}
            for name, value in parse.parse_qsl(text, keep_blank_values=True, strict_parsing=True):
                tokens.setdefault(name, []).append(value)
            if not tokens.keys() <= {"r", "p"} or tokens.get("r", ["0"]) not in (["0"], ["1"]):
                raise ValueError("not our tokens")
            reverse = tokens.get("r") == ["1"]
            values = tokens.get("p")
            if values is None:
                return reverse, None
            if len(values) != len(self.fields):
                raise ValueError("cursor from another ordering")
            return reverse, tuple(
                _in_utc(field.to_python(value)) for field, value in zip(self.fields, values, strict=True)
            )
        except (TypeError, ValueError, OverflowError, DjangoValidationError):
            raise ValidationError({self.cursor_query_param: [self.invalid_cursor_message]}) from None

    def encode_cursor(self, cursor):
        reverse, position = cursor
        tokens = {"r": "1"} if reverse else {}
        if position is not None:
            tokens["p"] = position
        querystring = parse.urlencode(tokens, doseq=True)
        return replace_query_param(
            self.base_url, self.cursor_query_param, b64encode(querystring.encode("ascii")).decode("ascii")
        )

    def _position(self, row) -> list[str]:
        names = [name.lstrip("-") for name in self.ordering]
        if isinstance(row, dict):
            return [str(row[name]) for name in names]
        return [str(getattr(row, name)) for name in names]

    def _after(self, position, *, before: bool):
        """The rows past `position` in the (one-way) ordering: below it when `before`."""
        names = [name.lstrip("-") for name in self.ordering]
        if len(names) == 1:
            return Q(**{f"{names[0]}__{'lt' if before else 'gt'}": position[0]})
        # Django's own row comparison (what composite primary keys use), not a chain of ORs, so
        # the planner can use the index as a range.
        lookup = TupleLessThan if before else TupleGreaterThan
        return lookup(Tuple(*(F(name) for name in names)), position)

    @staticmethod
    def _field(model, name: str):
        try:
            return model._meta.pk if name == "pk" else model._meta.get_field(name)
        except FieldDoesNotExist:
            raise AssertionError(f"Cursor pagination orders by a model field; {name!r} is not one.") from None


def _in_utc(value):
    """A date-time as the moment in UTC (our cursors carry UTC; a tampered one may carry any
    offset Python reads, up to 23:59, where PostgreSQL refuses any beyond 15:59: a 500).
    OverflowError when that moment falls outside the years 1 to 9999."""
    if isinstance(value, datetime):
        return (value if timezone.is_aware(value) else value.replace(tzinfo=UTC)).astimezone(UTC)
    return value


class TimelinePagination(CursorPagination):
    """Timelines: newest event first, ties (a batch of events at one instant) by id. Served by
    an index on (contact, -occurred_at, -id)."""

    ordering = ("-occurred_at", "-id")
