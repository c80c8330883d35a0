"""The published OpenAPI description: drf-spectacular's AutoSchema, plus what it cannot see.

- Every error answers one shape (crm_platform.api.errors.error_body): the component `Error`,
  declared on each operation for the statuses it can return, judged from the view: 401 and 403
  for a route that needs a caller, 400 where it takes input (a body, query parameters such as a
  page cursor, a header, a text path parameter), 404 for a path id, 413 and 415 for a body, 409 and 422
  where it honours Idempotency-Key, 429 where it is throttled (with Retry-After). A view may
  declare more itself (`@extend_schema(responses={409: ...})`); a 4xx it declares without a body
  gets the Error body.
- Idempotency-Key: the request header on the operations that honour it (crm_platform.idempotency),
  and the `Idempotent-Replayed` response header on their successes.
- A public route (PublicRoute: signed by a provider) needs no API key: `security: []`.
"""

from __future__ import annotations

import copy

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from crm_platform.api.permissions import PublicRoute
from crm_platform.api.scopes import SCOPES
from crm_platform.idempotency import HEADER, REPLAYED, KeyUse, key_use

ERROR_COMPONENT = "Error"
ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
ERROR_SCHEMA = {
    "type": "object",
    "description": 'Every 4xx and 5xx: `{"error": {"code", "message", "fields"}}` (crm_platform/api/errors.py).',
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Machine-readable: validation_error, not_authenticated, permission_denied, "
                    "not_found, conflict, idempotency_key_reused, throttled, ... (stable; match on it).",
                },
                "message": {"type": "string", "description": "For people; may change."},
                "fields": {
                    "type": "object",
                    "additionalProperties": {},
                    "description": "Field -> messages for a validation error (nested fields joined with dots, "
                    "`non_field_errors` for the rest); what a conflict names; else empty.",
                },
            },
            "required": ["code", "message", "fields"],
            "additionalProperties": False,
        }
    },
    "required": ["error"],
    "additionalProperties": False,
}

ERROR_DESCRIPTIONS = {
    400: "The input is not valid: the body, a query parameter (a page `cursor` that is not one this list gave) or "
    "a header (`validation_error` names the fields; an Idempotency-Key that is malformed, or missing where the "
    "route needs one).",
    401: "No credentials, or not valid ones (an unknown, revoked or expired API key).",
    403: "The caller lacks the scope (or, for staff, the permission) this route needs.",
    404: "Not found: no such object at this path.",
    409: "Conflict: a request with this Idempotency-Key is still running, or the change collides with another.",
    410: "Gone.",
    413: "The request body is too large.",
    415: "The request body is not JSON (Content-Type).",
    422: "This Idempotency-Key was sent before with another request body (`idempotency_key_reused`).",
    429: "Too many requests: wait Retry-After seconds.",
}
KEYED_RETRIES = " A retry with an Idempotency-Key used before is answered as then, never 429."
WRITES = ("POST", "PUT", "PATCH")

RETRY_AFTER = {
    "schema": {"type": "integer", "minimum": 1},
    "required": True,
    "description": "Seconds to wait before trying again.",
}
REPLAYED_HEADER = {
    "schema": {"type": "string", "enum": ["true"]},
    "description": f"Present on the replay of a request sent before with the same {HEADER} and body.",
}


def error_response(description: str) -> OpenApiResponse:
    """For a view declaring an error status of its own: `@extend_schema(responses={409: error_response(...)})`."""
    return OpenApiResponse(ERROR_REF, description=description)


def _error_body() -> dict:
    return {"application/json": {"schema": dict(ERROR_REF)}}


class AutoSchema(SpectacularAutoSchema):
    def key_use(self) -> KeyUse | None:
        return key_use(getattr(self.view, self.method.lower(), None))

    def is_public(self) -> bool:
        return any(isinstance(permission, PublicRoute) for permission in self.view.get_permissions())

    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        use = self.key_use()
        if use is not None:
            parameters = [
                *parameters,
                OpenApiParameter(
                    HEADER,
                    OpenApiTypes.STR,
                    OpenApiParameter.HEADER,
                    required=use.required,
                    pattern=r"^[!-~]{1,255}$",
                    description="Makes a retry safe: the same key and body again answers as the first time "
                    f"(with `{REPLAYED}: true`) and changes nothing; kept at least 24 hours. 1 to 255 printable "
                    "ASCII characters.",
                ),
            ]
        return parameters

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        self.registry.register_on_missing(
            ResolvedComponent(
                name=ERROR_COMPONENT, type=ResolvedComponent.SCHEMA, object=ERROR_COMPONENT, schema=ERROR_SCHEMA
            )
        )
        public = self.is_public()
        if public:
            operation["security"] = []  # signed by its provider, not an API key
        responses = operation["responses"]
        keyed = self.key_use() is not None
        for status in self.error_statuses(operation, public=public):
            description = ERROR_DESCRIPTIONS[status] + (KEYED_RETRIES if status == 429 and keyed else "")
            responses.setdefault(str(status), {"description": description})
        for code, response in responses.items():
            if code.startswith("4") and "content" not in response:
                response["content"] = _error_body()
            if code == "429":
                response.setdefault("headers", {})["Retry-After"] = copy.deepcopy(RETRY_AFTER)
            if code.startswith("2") and keyed:
                response.setdefault("headers", {})[REPLAYED] = copy.deepcopy(REPLAYED_HEADER)
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def error_statuses(self, operation: dict, *, public: bool) -> set[int]:
        parameters = operation.get("parameters", [])
        located = {location: [p for p in parameters if p["in"] == location] for location in ("path", "query", "header")}
        body = "requestBody" in operation
        use = self.key_use()
        statuses = set()
        if not public and self.view.get_authenticators():
            statuses |= {401, 403}
        text_path = any(p["schema"].get("type") == "string" and "format" not in p["schema"] for p in located["path"])
        if body or located["query"] or located["header"] or text_path:
            statuses.add(400)
        if located["path"]:
            statuses.add(404)
        if self.method in WRITES and (body or use is not None):
            statuses.add(413)  # the body is read: parsed, or fingerprinted under its key
        if body:
            statuses.add(415)
        if use is not None:
            statuses.add(422)
            if use.in_flight_conflict:
                statuses.add(409)
        if self.view.get_throttles():
            statuses.add(429)
        return statuses


def describe_scopes(result, generator, request, public):
    lines = [
        "Machine clients authenticate with `Authorization: Bearer <api key>`. Keys carry scopes:",
        "",
        "| scope | grants |",
        "|---|---|",
    ]
    lines += [f"| `{scope.name}` | {scope.description} |" for scope in SCOPES.values()]
    lines += [
        "",
        'Errors always answer `{"error": {"code", "message", "fields"}}` (the `Error` schema); every response '
        "carries `X-Request-ID`.",
    ]
    result.setdefault("info", {})["description"] = "\n".join(lines)
    return result
