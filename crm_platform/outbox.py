"""outbox_publish: the one way any app tells the outside about a change.

The row is written in the caller's transaction, so it exists exactly when the change does.
Delivery (the relay, destinations, retries) belongs to `integrations`; the payload passes the
PHI guard there, on its way out.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from crm_platform.actor import Actor
from crm_platform.models import OutboxMessage


def outbox_publish(
    *,
    topic: str,
    obj: models.Model,
    payload: dict[str, Any],
    actor: Actor,
    destination: str = "",
) -> OutboxMessage:
    """Record that `topic` happened to `obj`. Call inside the service's transaction."""
    return OutboxMessage.objects.create(
        topic=topic,
        destination=destination,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        payload=payload,
        request_id=actor.request_id[:64],
    )


def outbox_publish_many(
    *, topic: str, object_type: str, rows: list[tuple[str | int, dict[str, Any]]], actor: Actor
) -> int:
    """outbox_publish for many objects of one type in one INSERT (bulk paths): `rows` are
    (object id, payload) pairs."""
    OutboxMessage.objects.bulk_create(
        [
            OutboxMessage(
                topic=topic,
                object_type=object_type,
                object_id=str(object_id),
                payload=payload,
                request_id=actor.request_id[:64],
            )
            for object_id, payload in rows
        ],
        batch_size=1000,
    )
    return len(rows)
