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
