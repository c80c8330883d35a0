"""Audit rows for reads of medical data (PHI): one row per object shown, written set-based
(one INSERT per response) by the API serializers and the admin (crm_platform/api/phi.py,
crm_platform/admin_tools.py PhiAdminMixin)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import models

from compliance.services import audit_record_many, audit_subject
from crm_platform.actor import Actor

PHI_READ = "phi.read"
# How the reader was allowed to see the fields.
ACCESS_PERMISSION = "permission"  # staff with compliance.view_phi, or an API key with phi:read
ACCESS_BREAK_GLASS = "break_glass"


def audit_phi_reads(
    *,
    actor: Actor,
    objects: Iterable[models.Model],
    fields: Sequence[str],
    channel: str,
    access: str = ACCESS_PERMISSION,
) -> int:
    """Record that `actor` was shown `fields` of each object (object, its contact, the field
    names, the channel "api" or "admin", and how access was granted) in one INSERT. Field names
    only, never values. Objects of several models make one INSERT per model."""
    by_type: dict[str, list[tuple]] = {}
    details = {"fields": list(fields), "channel": channel, "access": access}
    for obj in objects:
        if obj.pk is None:
            continue
        by_type.setdefault(obj._meta.label_lower, []).append((obj.pk, details, audit_subject(obj)))
    return sum(
        audit_record_many(actor=actor, action=PHI_READ, object_type=label, rows=rows) for label, rows in by_type.items()
    )
