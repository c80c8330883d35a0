"""The one registry of API scopes.

A key's scopes decide what it may do. Each resource has `<resource>:read` and
`<resource>:write`; `phi:read` is needed to see medical fields at all; `admin` grants every
scope except `phi:read`. Staff using the API with their session are checked against the
Django permission a scope names (superusers pass; a scope with no permission is for
superusers only until its app gives it one).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    name: str
    description: str
    staff_permission: str | None = None


RESOURCES: dict[str, str] = {
    "contacts": "contacts, companies and their timelines",
    "leads": "leads and lead capture",
    "deals": "deals and pipelines",
    "tickets": "support tickets",
    "events": "inbound app events",
    "webhooks": "outbound webhook endpoints and deliveries",
    "coaching": "health goals, logs, insights and the AI assistant",
    "campaigns": "email and SMS campaigns",
    "scheduling": "availability and consultations",
}

PHI_READ = "phi:read"
ADMIN = "admin"
EVENT_SOURCES = "events:sources"

_SPECIAL = [
    Scope(PHI_READ, "see medical fields (conditions, medications, labs, notes, measurements)"),
    Scope("gdpr:write", "run GDPR/CCPA export and erasure"),
    Scope("consents:write", "record consent grants and revocations (with their proof)"),
    Scope("audit:read", "read the audit log"),
    Scope(
        EVENT_SOURCES,
        "send events as an outside CRM or marketing tool (source crm or marketing), with the rank the "
        "conflict policy gives it over the app's own events",
    ),
    Scope(ADMIN, "every scope except phi:read, and the operator jobs"),
]

SCOPES: dict[str, Scope] = {}
for _resource, _what in RESOURCES.items():
    SCOPES[f"{_resource}:read"] = Scope(f"{_resource}:read", f"read {_what}")
    SCOPES[f"{_resource}:write"] = Scope(f"{_resource}:write", f"create and change {_what}")
for _scope in _SPECIAL:
    SCOPES[_scope.name] = _scope


def set_staff_permission(scope: str, permission: str) -> None:
    """Let an app name the Django permission that stands for `scope` when staff use the API."""
    current = SCOPES[scope]
    SCOPES[scope] = Scope(current.name, current.description, permission)


def scope_choices() -> list[tuple[str, str]]:
    return [(s.name, f"{s.name}: {s.description}") for s in SCOPES.values()]


def unknown_scopes(scopes) -> list[str]:
    return sorted(set(scopes) - SCOPES.keys())


def first_few(names: list[str], shown: int = 5) -> str:
    """Names to show in a refusal: the first `shown`, then how many more ("a, b and 3 more")."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def not_grantable(user, scopes) -> dict[str, str]:
    """The scopes among `scopes` that `user` may not give a key, each with what they lack.

    A superuser gives any. Anyone else gives only the scopes they hold themselves, as the API
    reads their session (has_scope): the permission a scope names. A scope that names none is
    for superusers, and `admin` needs every scope it grants: else a key would hand the person
    who made it (and sees it once) more than their role does."""
    if user.is_superuser:
        return {}
    held = user.get_all_permissions()

    def lacking(scope: str) -> str | None:
        if scope == ADMIN:
            missing = [s for s in SCOPES if s not in (ADMIN, PHI_READ) and lacking(s)]
            if not missing:
                return None
            return f"it grants every scope but phi:read, and you do not hold {first_few(missing)}"
        permission = SCOPES[scope].staff_permission
        if permission is None:
            return "no staff permission stands for it: superusers only"
        return None if permission in held else f"you lack {permission}"

    reasons = {scope: lacking(scope) for scope in sorted(set(scopes)) if scope in SCOPES}
    return {scope: reason for scope, reason in reasons.items() if reason}


def not_grantable_message(refused: dict[str, str]) -> str:
    return (
        "You can give a key only scopes you hold yourself; a superuser can give "
        + "; ".join(f"“{scope}” ({reason})" for scope, reason in refused.items())
        + "."
    )


def grants(held, required: str) -> bool:
    """Whether a set of held scopes grants `required`. `admin` grants all but phi:read."""
    if required in held:
        return True
    return ADMIN in held and required != PHI_READ and required in SCOPES
