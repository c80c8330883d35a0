from __future__ import annotations

import logging
import re
import time

from django.core.exceptions import BadRequest, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpResponseBadRequest

from crm_platform.actor import new_request_id
from crm_platform.api.errors import STATUS_CODES, error_response
from crm_platform.logging import loggable_path, request_id_var

logger = logging.getLogger("crm_platform.request")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# HTML pages keep Django's HTML errors; everything else answers in JSON.
_HTML_PREFIXES = ("/admin/", "/api/docs/", "/api/redoc/")


class RequestIdMiddleware:
    """Take X-Request-ID from the client (when well formed) or make one; put it on the
    request, on every log line of the request, and on the response. Logs one access line
    per request: method, path (never the query string or body; hidden URL parameters by their
    name, crm_platform.logging.loggable_path), status and duration."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request.request_id = incoming if _VALID_REQUEST_ID.match(incoming) else new_request_id()
        token = request_id_var.set(request.request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request.request_id
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            path = loggable_path(request)
            logger.info(
                "%s %s %s %sms",  # the text line says it all too (LOG_JSON=false shows no extras)
                request.method,
                path,
                response.status_code,
                duration_ms,
                extra={
                    "method": request.method,
                    "path": path,
                    "status": response.status_code,
                    "duration_ms": duration_ms,
                },
            )
            return response
        finally:
            request_id_var.reset(token)


class RefuseNulMiddleware:
    """A NUL character in the path or the query string is a 400, before any view: no text
    column, no index and no identifier of ours can hold one (PostgreSQL refuses it, a 500 in
    whatever view passed it on). Bodies are the parser's (crm_platform.api.fastjson)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or any("\x00" in name + "".join(values) for name, values in request.GET.lists()):
            if wants_html(request):
                return HttpResponseBadRequest("NUL characters are not accepted in a URL.", content_type="text/plain")
            return error_response(400, "NUL characters (%00) are not accepted in a URL.")
        return self.get_response(request)


class HealthProbeMiddleware:
    """/healthz and /readyz answered before the Host check (CommonMiddleware): a load balancer's
    or an orchestrator's probe names the node by its address, which DJANGO_ALLOWED_HOSTS does
    not list, and a probe refused 400 takes a healthy node out. They read nothing from the
    request; the SSL redirect exempts them too (SECURE_REDIRECT_EXEMPT)."""

    def __init__(self, get_response):
        from crm_platform import health

        self.get_response = get_response
        self.probes = {"/healthz": health.healthz, "/readyz": health.readyz}

    def __call__(self, request):
        probe = self.probes.get(request.path_info) if request.method == "GET" else None
        return probe(request) if probe is not None else self.get_response(request)  # others: the 405 as JSON


def wants_html(request) -> bool:
    return request.path.startswith(_HTML_PREFIXES)


class JsonErrorMiddleware:
    """Every 4xx/5xx outside the HTML pages answers `{"error": {code, message, fields}}`,
    including Django's own 404/405/500 and exceptions raised outside DRF."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code < 400 or wants_html(request):
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        replacement = error_response(response.status_code, _message_for(response.status_code))
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if header in response:
                replacement[header] = response[header]
        return replacement

    def process_exception(self, request, exception):
        if wants_html(request):
            return None
        if isinstance(exception, Http404):
            return error_response(404, "Not found.")
        if isinstance(exception, PermissionDenied):
            return error_response(403, "You do not have permission to do this.")
        if isinstance(exception, RequestDataTooBig):
            return error_response(413, "The request body is too large.")
        if isinstance(exception, (BadRequest, SuspiciousOperation)):
            return error_response(400, "Bad request.")
        logger.exception("unhandled error on %s %s", request.method, loggable_path(request))
        return error_response(500, "Something went wrong on our side; the request id identifies it.")


def _message_for(status: int) -> str:
    return {
        400: "Bad request.",
        401: "Authentication is required.",
        403: "You do not have permission to do this.",
        404: "Not found.",
        405: "Method not allowed.",
        413: "The request body is too large.",
        429: "Too many requests.",
        500: "Something went wrong on our side; the request id identifies it.",
        503: "Service unavailable.",
    }.get(status, STATUS_CODES.get(status, "error").replace("_", " ").capitalize() + ".")
