"""HubSpot's webhooks (CONTRACTS.md): v3 signatures checked, their events turned into ours.

Today one subscription type has an effect: `contact.privacyDeletion`, HubSpot telling us a person
asked to be erased there, which runs the same erasure as every other channel
(compliance.gdpr.contact_erase). The other types are acknowledged without effect until the
HubSpot adapter (a later issue) maps them; nothing is lost, HubSpot keeps the records.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType

from compliance.gdpr import contact_erase
from contacts.models import Contact, ExternalRef
from crm_platform.actor import Actor, ActorKind
from crm_platform.errors import ConflictError
from integrations.models import SyncEvent
from integrations.sync import inbound_row, sync_event_record

PROVIDER = "hubspot"
PRIVACY_DELETION = "contact.privacyDeletion"
MAX_AGE_MS = 5 * 60 * 1000  # CONTRACTS.md: reject requests older than 5 minutes


class SignatureError(Exception):
    """The request is not HubSpot's (or is too old to trust): answered 401, nothing done."""


def signature_verify(*, method: str, uri: str, body: bytes, timestamp: str | None, signature: str | None) -> None:
    """X-HubSpot-Signature-v3 = base64(HMAC-SHA256(client secret, METHOD + URI + body + timestamp)),
    timestamp in milliseconds, no older than five minutes. Raises SignatureError."""
    secret = settings.HUBSPOT_CLIENT_SECRET
    if not secret:
        raise SignatureError("HubSpot webhooks are not configured here (HUBSPOT_CLIENT_SECRET).")
    try:
        sent_ms = int(timestamp or "")
    except ValueError:
        raise SignatureError("Missing or malformed X-HubSpot-Request-Timestamp.") from None
    if abs(time.time() * 1000 - sent_ms) > MAX_AGE_MS:
        raise SignatureError("The request's timestamp is more than five minutes away from now.")
    signed = method.upper().encode() + uri.encode() + body + str(timestamp).encode()
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected.encode(), (signature or "").encode()):
        raise SignatureError("The X-HubSpot-Signature-v3 does not match.")


def events_handle(events: list[dict[str, Any]]) -> dict[str, int]:
    """Apply a verified batch. Erasure is idempotent and HubSpot redelivers, so a repeated event
    finds nothing left to erase. A contact under legal hold is not erased: the refusal is
    recorded in the sync log (failed, "legal_hold") for staff, and HubSpot gets its 2xx."""
    actor = Actor(ActorKind.PROVIDER, PROVIDER)
    counts = {"erased": 0, "unknown": 0, "refused": 0, "ignored": 0}
    contact_type = ContentType.objects.get_for_model(Contact)
    for event in events:
        if event.get("subscriptionType") != PRIVACY_DELETION:
            counts["ignored"] += 1
            continue
        external_id = str(event.get("objectId") or "")
        contact_id = (
            ExternalRef.objects.filter(
                provider=PROVIDER, object_type="contact", external_id=external_id, content_type=contact_type
            )
            .values_list("object_id", flat=True)
            .first()
        )
        status, error = SyncEvent.Status.APPLIED, ""
        if contact_id is None:
            counts["unknown"] += 1
        else:
            try:
                contact_erase(contact_id=contact_id, actor=actor)
                counts["erased"] += 1
            except ConflictError as exc:
                status, error = SyncEvent.Status.FAILED, exc.code or "conflict"
                counts["refused"] += 1
        sync_event_record(
            inbound_row(
                provider=PROVIDER,
                event_type=PRIVACY_DELETION,
                payload=event,
                status=status,
                object_id=contact_id,
                external_id=external_id,
                error=error,
            )
        )
    return counts
