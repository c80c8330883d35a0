"""CSV downloads from the admin: streamed, and safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from django.http import StreamingHttpResponse
from django.utils import timezone


def csv_cell(value):
    """A value for a spreadsheet: lists joined, and text that a spreadsheet would run as a
    formula (=, +, -, @, tab, CR) made inert with a leading apostrophe (OWASP CSV injection)."""
    if isinstance(value, list | tuple):
        value = ";".join(str(v) for v in value)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_response(name: str, header: Sequence[str], rows: Iterable[Sequence]) -> StreamingHttpResponse:
    """Stream `rows` under `header` as name-<timestamp>.csv, every cell through csv_cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def stream():
        writer.writerow(header)
        for row in rows:
            writer.writerow([csv_cell(v) for v in row])
            if buffer.tell() > 64_000:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    response = StreamingHttpResponse(stream(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{name}-{timezone.now():%Y%m%d-%H%M}.csv"'
    return response
