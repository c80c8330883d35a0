"""The README and .env.example tell the truth: every variable the settings read is documented
(and nothing else), and the route index lists every API route with the scopes it needs."""

import re

from django.urls import URLResolver, get_resolver

from crm_platform.api.permissions import ANY_PRINCIPAL, required_scope
from crm_platform.api.public import PUBLIC_ROUTES
from tests.support import ROOT

README = (ROOT / "README.md").read_text()
# Read outside settings.py: ensure_admin (ADMIN_PASSWORD) and the Makefile's Procfile values.
READ_ELSEWHERE = {"ADMIN_PASSWORD", "PORT", "WEB_CONCURRENCY", "WORKER_CONCURRENCY"}


def _variables_read() -> set[str]:
    source = (ROOT / "crm_platform" / "settings.py").read_text()
    names = set(re.findall(r"\benv(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]+)\"", source))
    names |= set(re.findall(r"os\.environ\.get\(\s*\"([A-Z][A-Z0-9_]+)\"", source))
    return names | READ_ELSEWHERE


def _readme_configuration_table() -> set[str]:
    section = README[README.index("## Configuration") : README.index("## Architecture")]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_every_variable_the_settings_read_is_in_the_readme_table_and_nothing_else():
    read, documented = _variables_read(), _readme_configuration_table()
    assert read - documented == set(), "read but not documented"
    assert documented - read == set(), "documented but never read"


def test_env_example_names_every_variable_the_settings_read():
    """It named 47 of 53: ADMIN_BULK_INLINE_LIMIT, EVENT_FUTURE_TOLERANCE_SECONDS, OTP_TOTP_ISSUER,
    WEBHOOK_SECRET_OVERLAP_HOURS, WEB_CONCURRENCY and WORKER_CONCURRENCY were missing."""
    example = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    named |= {"DJANGO_ENV_FILE"} if "DJANGO_ENV_FILE" in example else set()
    read = _variables_read()
    assert read - named == set(), "read but not in .env.example"
    assert named - read == set(), "in .env.example but never read"


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield "/" + prefix + str(pattern.pattern), pattern


_PLACEHOLDERS = {"pk": "id", "bundle_id": "id", "endpoint_id": "id", "user_id": "userId"}


def _route_index_from_the_code() -> dict[str, str]:
    rows = {}
    for route, pattern in _walk(get_resolver().url_patterns):
        view = getattr(pattern.callback, "cls", None)
        if not route.startswith("/api/") or view is None:
            continue
        shown = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + _PLACEHOLDERS.get(m[1], m[1]) + "}", route)
        cells = []
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if not hasattr(view, method.lower()):
                continue
            scope = required_scope(view, method)
            if scope is None:
                who = "public" if pattern.name in PUBLIC_ROUTES else "nobody"
            else:
                who = "any key" if scope == ANY_PRINCIPAL else f"`{scope}`"
            cells.append(f"{method} {who}")
        rows[shown] = ", ".join(cells)
    return rows


def _route_index_in_the_readme() -> dict[str, str]:
    section = README[README.index("Route index:") : README.index("## Operations")]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `/"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_the_readme_route_index_is_every_api_route_with_its_scopes():
    """The README named neither the leads, deals, pipelines and funnels routes (it pointed at
    leads/README.md, which lists none) nor `companies/{id}`, DELETE of a webhook endpoint or seed
    003's `stats` without an id."""
    code, readme = _route_index_from_the_code(), _route_index_in_the_readme()
    assert sorted(code.keys() - readme.keys()) == [], "routes the README does not list"
    assert sorted(readme.keys() - code.keys()) == [], "routes the README lists that do not exist"
    wrong = {route: (readme[route], code[route]) for route in code if readme[route] != code[route]}
    assert wrong == {}, "README scopes (left) differ from the views' (right)"
