from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import connection, models
from django.utils import timezone

from compliance.models import AuditEvent
from compliance.registry import is_personal
from crm_platform.actor import Actor
from crm_platform.api.fastjson import django_dumps

_SCALARS = (str, int, float, bool, type(None))


def audit_record(
    *,
    actor: Actor,
    action: str,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str | int = "",
    changes: Mapping[str, Any] | None = None,
    subject_id: int | None = None,
) -> AuditEvent:
    """Write one append-only audit row in the caller's transaction.

    `changes` maps field names to `(old, new)` pairs or to a single new value. Values are kept
    only for fields that are not registered as personal (and only scalars); for personal
    fields the row records that the field changed, never what it held.
    """
    if obj is not None:
        object_type = obj._meta.label_lower
        object_id = obj.pk
        if subject_id is None:
            subject_id = audit_subject(obj)
    event = _event(actor, action, object_type, object_id, changes)
    event.subject_id = subject_id
    event.save(force_insert=True)
    return event


def audit_subject(obj: models.Model) -> int | None:
    """The contact an object is about: the contact itself, or the one it belongs to
    (`contact_id`), for "who viewed this patient" and the per-contact audit trail."""
    if obj._meta.label_lower == "contacts.contact":
        return obj.pk
    return getattr(obj, "contact_id", None)


def audit_record_many(*, actor: Actor, action: str, object_type: str, rows: list[tuple]) -> int:
    """audit_record for many objects of one type in one INSERT ... SELECT over a JSON array (bulk
    paths): `rows` are (object id, changes) pairs, or (object id, changes, subject contact id)
    triples. Same guarantees: caller's transaction, no personal values."""
    if not rows:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {AuditEvent._meta.db_table} (occurred_at, actor_kind, actor_id, action, "  # noqa: S608
            "object_type, object_id, changes, request_id, ip, subject_id) "
            "SELECT %s, %s, %s, %s, %s, e.item->>0, e.item->1, %s, %s, (e.item->>2)::bigint "
            "FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(item, n) ORDER BY e.n",
            [
                timezone.now(),
                actor.kind,
                str(actor.id)[:64],
                action,
                object_type,
                actor.request_id[:64],
                actor.ip,
                # One JSON document rather than a text[] of JSON texts, whose quoting escapes
                # every double quote one at a time (outbox_publish_many does the same).
                django_dumps(
                    [
                        [
                            "" if row[0] in (None, "") else str(row[0]),
                            _scrub(object_type, row[1] or {}),
                            row[2] if len(row) > 2 else None,
                        ]
                        for row in rows
                    ]
                ),
            ],
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
