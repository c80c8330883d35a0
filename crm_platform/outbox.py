"""outbox_publish: the one way any app tells the outside about a change.

The row is written in the caller's transaction, so it exists exactly when the change does.
Delivery (the relay, destinations, retries) belongs to `integrations`; the payload passes the
PHI guard there, on its way out.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import models, transaction
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from crm_platform.actor import Actor
from crm_platform.models import OutboxMessage

logger = logging.getLogger(__name__)

RELAY_TASK = "integrations.tasks.outbox_relay"


def _kick_relay() -> None:
    """Ask a worker to relay now. Best effort: with the broker down the rows wait in
    PostgreSQL and the beat sweep delivers them, so a failed kick is only logged."""
    from crm_platform.celery import app

    try:
        app.send_task(RELAY_TASK, queue="sync", expires=60, retry=False)
    except (KombuError, RedisError, OSError) as exc:
        logger.warning("outbox relay kick not sent (%s); the sweep will deliver", type(exc).__name__)


def _kick_relay_on_commit() -> None:
    connection = transaction.get_connection()
    # One kick per transaction, however many rows it wrote.
    if connection.in_atomic_block and any(entry[1] is _kick_relay for entry in connection.run_on_commit):
        return
    transaction.on_commit(_kick_relay, robust=True)


def outbox_publish(
    *,
    topic: str,
    obj: models.Model,
    payload: dict[str, Any],
    actor: Actor,
    destination: str = "",
) -> OutboxMessage:
    """Record that `topic` happened to `obj`. Call inside the service's transaction."""
    message = OutboxMessage.objects.create(
        topic=topic,
        destination=destination,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        payload=payload,
        request_id=actor.request_id[:64],
    )
    _kick_relay_on_commit()
    return message


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
    if rows:
        _kick_relay_on_commit()
    return len(rows)
