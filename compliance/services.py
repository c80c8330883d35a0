from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models

from compliance.models import AuditEvent
from compliance.registry import is_personal
from crm_platform.actor import Actor

_SCALARS = (str, int, float, bool, type(None))


def audit_record(
    *,
    actor: Actor,
    action: str,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str | int = "",
    changes: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Write one append-only audit row in the caller's transaction.

    `changes` maps field names to `(old, new)` pairs or to a single new value. Values are kept
    only for fields that are not registered as personal (and only scalars); for personal
    fields the row records that the field changed, never what it held.
    """
    if obj is not None:
        object_type = obj._meta.label_lower
        object_id = obj.pk
    event = _event(actor, action, object_type, object_id, changes)
    event.save(force_insert=True)
    return event


def audit_record_many(
    *, actor: Actor, action: str, object_type: str, rows: list[tuple[str | int, Mapping[str, Any]]]
) -> int:
    """audit_record for many objects of one type in one INSERT (bulk paths): `rows` are
    (object id, changes) pairs. Same guarantees: caller's transaction, no personal values."""
    AuditEvent.objects.bulk_create(
        [_event(actor, action, object_type, object_id, changes) for object_id, changes in rows], batch_size=1000
    )
    return len(rows)


def _event(actor: Actor, action: str, object_type: str, object_id, changes) -> AuditEvent:
    return AuditEvent(
        actor_kind=actor.kind,
        actor_id=str(actor.id)[:64],
        action=action,
        object_type=object_type,
        object_id="" if object_id in (None, "") else str(object_id),
        changes=_scrub(object_type, changes or {}),
        request_id=actor.request_id[:64],
        ip=actor.ip,
    )


def _scrub(object_type: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    scrubbed: dict[str, Any] = {}
    for field, value in changes.items():
        if is_personal(object_type, field):
            scrubbed[field] = {"changed": True}
            continue
        old, new = value if isinstance(value, tuple) and len(value) == 2 else (None, value)
        scrubbed[field] = {"old": _plain(old), "new": _plain(new)}
    return scrubbed


def _plain(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, _SCALARS) for v in value):
        return list(value)
    return str(value)
