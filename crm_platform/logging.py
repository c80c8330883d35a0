"""Request id carried into every log line, and request paths logged without their secrets.

The request id lives in a context variable set by RequestIdMiddleware (and by Celery task
prerun from the task's headers), so log lines carry it without threading it through every
call. Services still receive the Actor explicitly; this is only for logging.
"""

import contextvars
import logging

from django.http import HttpRequest

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# URL parameters never written to a log: a signed GDPR export link's token is the bundle's key
# for as long as the link lives (with the caller's own credentials); the seed routes' emails
# (/api/integrations/crm/leads/<email>) and app user ids (/api/crm/users/<user_id>) name a
# person, and a log line is out of erasure's reach.
HIDDEN_URL_PARAMETERS = frozenset({"token", "email", "user_id"})


def loggable_path(request: HttpRequest) -> str:
    """The request's path (never its query string) with each hidden URL parameter of the route
    it matched replaced by the parameter's name: /api/v1/exports/download/<token>."""
    path = request.path
    match = getattr(request, "resolver_match", None)
    if match is None:
        return path
    for name in HIDDEN_URL_PARAMETERS & match.kwargs.keys():
        secret = str(match.kwargs[name])
        path = "/".join(f"<{name}>" if part == secret else part for part in path.split("/"))
    return path


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get()
        return True


def _escaped(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")


class RequestPathFilter(logging.Filter):
    """Django's own lines about a request (django.request on a 5xx, django.security) name its
    path in the message and carry the request, which the JSON formatter writes out with its
    query string: both become loggable_path."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if isinstance(request, HttpRequest):
            path = loggable_path(request)
            if isinstance(record.args, tuple):
                # Django's log_response passes the path unicode-escaped (a path with a non-ASCII
                # character, such as an IDN email's, is then no longer request.path).
                forms = {request.path: path, _escaped(request.path): _escaped(path)}
                record.args = tuple(forms.get(arg, arg) if isinstance(arg, str) else arg for arg in record.args)
            record.request = f"{request.method} {path}"
        return True
