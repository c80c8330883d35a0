"""Deny by default.

Every API view declares what it needs: `required_scopes`, a mapping from HTTP method to a
scope (or `ANY_PRINCIPAL` for routes any authenticated caller may use), or `scope_resource`,
which means `<resource>:read` for safe methods and `<resource>:write` for the rest. A view
that declares nothing refuses everyone. Public routes opt out with `PublicRoute`.

Staff calling with their session hold a scope through the Django permission it names (one per
scope, e.g. contacts:write is change_contact). A route that writes other records than the
scope's own also declares `staff_permissions` (method -> permission, or a tuple of them):
staff need those too, so the API lets them do no more than their role lets them do in the
admin. API keys are unaffected: their scopes are what they may do.
"""

from __future__ import annotations

import logging

from rest_framework import permissions

from crm_platform.api.scopes import PHI_READ, SCOPES, grants
from crm_platform.models import ApiKey

logger = logging.getLogger(__name__)

ANY_PRINCIPAL = "*"
SAFE_METHODS = permissions.SAFE_METHODS


def required_scope(view, method: str) -> str | None:
    declared = getattr(view, "required_scopes", None)
    if declared == ANY_PRINCIPAL:
        return ANY_PRINCIPAL
    if isinstance(declared, dict):
        if method in declared:
            return declared[method]
        if method in ("HEAD", "OPTIONS") and "GET" in declared:
            return declared["GET"]
        return None
    resource = getattr(view, "scope_resource", None)
    if resource:
        return f"{resource}:read" if method in SAFE_METHODS else f"{resource}:write"
    return None


class ScopePermission(permissions.BasePermission):
    message = "The caller lacks the scope this route needs."

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        scope = required_scope(view, request.method)
        if scope is None:
            if request.method.lower() not in view.http_method_names or not hasattr(view, request.method.lower()):
                return True  # nothing to allow: the view answers 405 (Allow names what it serves)
            logger.error("view %s declares no scope for %s; refusing", type(view).__name__, request.method)
            return False
        if scope == ANY_PRINCIPAL:
            return True
        if not has_scope(request, scope):
            self.message = f"The caller lacks the scope '{scope}'."
            return False
        needed = (getattr(view, "staff_permissions", None) or {}).get(request.method, ())
        needed = (needed,) if isinstance(needed, str) else tuple(needed)
        if needed and not isinstance(request.auth, ApiKey) and not request.user.has_perms(needed):
            self.message = f"Your role lacks the permission this needs ({', '.join(needed)})."
            return False
        return True


def has_scope(request, scope: str) -> bool:
    """Whether the caller holds `scope`: an API key by its scopes, a staff user by the Django
    permission the scope names (superusers hold every scope but phi:read without one)."""
    if isinstance(request.auth, ApiKey):
        return grants(set(request.auth.scopes), scope)
    user = request.user
    if not (user and user.is_authenticated and user.is_active and user.is_staff):
        return False
    if user.is_superuser and scope != PHI_READ:
        return True
    perm = SCOPES[scope].staff_permission
    return perm is not None and user.has_perm(perm)


class PublicRoute(permissions.BasePermission):
    """For the short declared list of public routes (crm_platform.api.public.PUBLIC_ROUTES)."""

    def has_permission(self, request, view) -> bool:
        return True
