"""integrations' handlers for the compliance data-subject registry (declared in apps.py): which
sync log and inbox rows are about a person, for erasure and for export. Each pair of handlers
shares its selector, so export shows exactly what erasure would remove."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from contacts.models import Contact
from integrations.inbound import EVENT_SOURCES
from integrations.models import INBOX_APPLIED_NAMED, InboundEvent, SyncEvent


def sync_events_about(contact_ids: list[int]) -> QuerySet:
    """The sync log's rows about the person: by our contact id, or by their app user id on the
    rows of inbound events (which name the user by it; a provider's row holds the provider's
    own id there, another space: HubSpot's object 7001 is not app user "7001"). The rest of the
    log holds ids and digests only. Answered by the object id and external id indexes."""
    external_ids = list(
        Contact._base_manager.filter(pk__in=contact_ids, external_id__isnull=False).values_list(
            "external_id", flat=True
        )
    )
    match = Q(object_type="contacts.contact", object_id__in=[str(pk) for pk in contact_ids])
    if external_ids:
        match |= Q(external_id__in=external_ids, provider__in=EVENT_SOURCES)
    return SyncEvent.objects.filter(match)


def erase_sync_events(*, contact_ids: list[int], actor) -> int:
    """The person's sync log rows go (sync_events_about)."""
    return sync_events_about(contact_ids).delete()[0]


# What a person sees of the sync log: what crossed our boundary about them, when, and how it
# ended. Not the payload digest (a keyed hash, meaningless to anyone without our key) nor the
# outbox row's id (our plumbing).
SYNC_EVENT_EXPORTED = (
    "id",
    "direction",
    "provider",
    "event_type",
    "object_type",
    "object_id",
    "external_id",
    "status",
    "attempts",
    "last_error",
    "occurred_at",
    "created_at",
    "updated_at",
)


def export_sync_events(*, contact_ids: list[int]) -> list[dict[str, Any]]:
    """The person's sync log rows (sync_events_about), oldest first: metadata only, as the log
    never holds a payload. Bounded by the log's retention (SYNC_EVENT_RETENTION_DAYS)."""
    return list(sync_events_about(contact_ids).order_by("id").values(*SYNC_EVENT_EXPORTED))


def erase_inbound_events(*, contact_ids: list[int], actor) -> int:
    """The inbox's rows naming the person (by email or app user id). Queued and failed rows go
    (their payload is about the person, and a queued sign-up must not bring them back), in one
    statement through those statuses' partial indexes. Applied rows name nobody (the applier
    clears their names and payload) and stay as Idempotency-Key records, so a retried request
    is answered as before instead of applied again; one applied by a version before that
    (migration 0008, a deploy's overlap) is blanked, found through a partial index of such rows."""
    found = _inbound_naming(contact_ids)
    if found is None:
        return 0
    unapplied, named = found
    gone = unapplied.delete()[0]
    return gone + named.update(user_email="", user_external_id="", payload=None)


def _inbound_naming(contact_ids: list[int]) -> tuple[QuerySet, QuerySet] | None:
    """The inbox's rows naming the person by email or app user id: (queued and failed ones,
    applied ones still naming them), each found through its statuses' partial indexes; None
    when the person has neither identifier. Other applied rows name nobody and keep only ids."""
    people = Contact._base_manager.filter(pk__in=contact_ids).values_list("email", "external_id")
    emails = [email for email, _ in people if email]
    external_ids = [external_id for _, external_id in people if external_id]
    if not emails and not external_ids:
        return None
    naming = Q(user_email__in=emails) | Q(user_external_id__in=external_ids)
    unapplied = Q(status=InboundEvent.Status.PENDING) | Q(status=InboundEvent.Status.FAILED)
    return InboundEvent.objects.filter(naming, unapplied), InboundEvent.objects.filter(naming, INBOX_APPLIED_NAMED)


# What a person sees of an inbox row: the event as the app sent it about them (payload, medical
# properties included: the export goes to the person, who sees every medical field, as in the
# timeline's activities), its state and outcome. Not whose API key sent it, its address, the
# Idempotency-Key or the request's hash (the sender's plumbing, not the person's data).
INBOUND_EVENT_EXPORTED = (
    "id",
    "route",
    "type",
    "user_email",
    "user_external_id",
    "payload",
    "status",
    "result",
    "received_at",
    "applied_at",
)


def export_inbound_events(*, contact_ids: list[int]) -> list[dict[str, Any]]:
    """The inbox's rows naming the person (_inbound_naming), oldest first. Bounded by the
    inbox's retention (IDEMPOTENCY_TTL_DAYS for applied and failed rows; queued rows are applied
    within seconds)."""
    found = _inbound_naming(contact_ids)
    if found is None:
        return []
    unapplied, named = found
    rows = [*unapplied.values(*INBOUND_EVENT_EXPORTED), *named.values(*INBOUND_EVENT_EXPORTED)]
    return sorted(rows, key=lambda row: row["id"])
