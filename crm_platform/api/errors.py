"""One JSON error shape for every 4xx and 5xx:

    {"error": {"code": "...", "message": "...", "fields": {...}}}

`exception_handler` serves DRF views; `JsonErrorMiddleware` (crm_platform.middleware) gives
the same shape to everything else outside the admin's HTML pages.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from crm_platform.errors import ConflictError

STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "throttled",
    500: "server_error",
    502: "bad_gateway",
    503: "unavailable",
}


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def error_response(status_code: int, message: str, *, code: str | None = None, fields=None) -> JsonResponse:
    code = code or STATUS_CODES.get(status_code, "error")
    return JsonResponse(error_body(code, message, fields), status=status_code)


def _flatten(detail) -> dict:
    """DRF's nested detail -> {field: [messages]} (nested fields joined with dots)."""
    fields: dict[str, list[str]] = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif isinstance(value, list) and value and all(isinstance(v, (dict, list)) for v in value):
            for index, sub in enumerate(value):
                walk(f"{prefix}.{index}" if prefix else str(index), sub)
        else:
            messages = value if isinstance(value, list) else [value]
            fields.setdefault(prefix or "non_field_errors", []).extend(str(m) for m in messages)

    walk("", detail)
    return fields


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        fields = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        return Response(error_body("validation_error", "The input is not valid.", fields), status=400)
    if isinstance(exc, ConflictError):
        return Response(error_body(exc.code, exc.message, exc.fields), status=409)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # unexpected: the middleware logs it and answers 500 in the same shape
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("validation_error", "The input is not valid.", _flatten(detail))
        return response
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    code = getattr(detail, "code", None) or getattr(exc, "default_code", None) or STATUS_CODES.get(response.status_code)
    if response.status_code == status.HTTP_401_UNAUTHORIZED:
        code = "not_authenticated" if code in ("not_authenticated", None) else code
    message = str(detail) if not isinstance(detail, (dict, list)) else "Request failed."
    response.data = error_body(str(code), message)
    return response
