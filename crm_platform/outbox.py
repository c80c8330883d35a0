"""outbox_publish: the one way any app tells the outside about a change.

The row is written in the caller's transaction, so it exists exactly when the change does.
Delivery (the relay, destinations, retries) belongs to `integrations`; the payload passes the
PHI guard there, on its way out.

Medical fields never rest in the outbox in the clear: `outbox_seal` moves a payload's top-level
medical fields (compliance.guard.phi_field_names: a deal's or subscription's plan, a lead's
persona, an assessment, a lifecycle move's typed reason...) into one Fernet token under
`SEALED`, as their own tables keep them encrypted; a destination reads the payload through
`outbox_open`. Rows written before sealing have no `SEALED` key and open as they are.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.db import models, transaction
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from crm_platform.actor import Actor
from crm_platform.api.fastjson import django_dumps
from crm_platform.models import OutboxMessage

logger = logging.getLogger(__name__)

RELAY_TASK = "integrations.tasks.outbox_relay"
SEALED = "_sealed"  # never on an allow-list: a payload read without outbox_open leaks nothing


def outbox_seal(payload: dict[str, Any], medical_names: frozenset[str] | None = None) -> dict[str, Any]:
    """The payload with its top-level medical fields encrypted together under SEALED."""
    from compliance.crypto import encrypt
    from compliance.guard import phi_field_names

    medical = payload.keys() & (medical_names if medical_names is not None else phi_field_names())
    if not medical:
        return payload
    sealed = {key: value for key, value in payload.items() if key not in medical}
    sealed[SEALED] = encrypt(django_dumps({key: payload[key] for key in medical}))
    return sealed


def outbox_open(payload: dict[str, Any]) -> dict[str, Any]:
    """A stored payload as it was published (its sealed medical fields decrypted)."""
    if not isinstance(payload, dict) or SEALED not in payload:
        return payload
    from compliance.crypto import decrypt

    opened = {key: value for key, value in payload.items() if key != SEALED}
    opened.update(json.loads(decrypt(payload[SEALED])))
    return opened


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
        payload=outbox_seal(payload),
        request_id=actor.request_id[:64],
    )
    _kick_relay_on_commit()
    return message


def outbox_publish_many(
    *, topic: str, object_type: str, rows: list[tuple[str | int, dict[str, Any]]], actor: Actor
) -> int:
    """outbox_publish for many objects of one type in one INSERT ... SELECT over a JSON array
    (bulk paths), ids in the order given: `rows` are (object id, payload) pairs."""
    if not rows:
        return 0
    from django.db import connection
    from django.utils import timezone

    from compliance.guard import phi_field_names

    now = timezone.now()
    medical = phi_field_names()  # once for the batch
    table = OutboxMessage._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (topic, destination, object_type, object_id, payload, status, attempts, "  # noqa: S608
            "next_attempt_at, last_error, request_id, created_at) "
            "SELECT %s, '', %s, e.item->>'id', e.item->'payload', 'pending', 0, %s, '', %s, %s "
            "FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(item, n) ORDER BY e.n",
            [
                topic,
                object_type,
                now,
                actor.request_id[:64],
                now,
                # One JSON document, not a text[] of them: quoting an array of JSON strings
                # escapes every double quote one by one (most of a 1,000-row bulk write's time).
                django_dumps(
                    [{"id": str(object_id), "payload": outbox_seal(payload, medical)} for object_id, payload in rows]
                ),
            ],
        )
    _kick_relay_on_commit()
    return len(rows)
