"""OpenAPI post-processing: the scope registry is part of the published description."""

from crm_platform.api.scopes import SCOPES


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
        'Errors always answer `{"error": {"code", "message", "fields"}}`; every response carries `X-Request-ID`.',
    ]
    result.setdefault("info", {})["description"] = "\n".join(lines)
    return result
