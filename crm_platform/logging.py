"""Request id carried into every log line.

The request id lives in a context variable set by RequestIdMiddleware (and by Celery task
prerun from the task's headers), so log lines carry it without threading it through every
call. Services still receive the Actor explicitly; this is only for logging.
"""

import contextvars
import logging

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get()
        return True
