"""integrations' handlers for the compliance data-subject registry (declared in apps.py)."""

from __future__ import annotations

from django.db.models import Q

from contacts.models import Contact
from integrations.models import INBOX_APPLIED_NAMED, InboundEvent, SyncEvent


def erase_sync_events(*, contact_ids: list[int], actor) -> int:
    """The sync log's rows about the person: by our contact id, or by their app user id (an
    inbound event names the user by it). The rest of the log holds ids and digests only."""
    external_ids = list(
        Contact._base_manager.filter(pk__in=contact_ids, external_id__isnull=False).values_list(
            "external_id", flat=True
        )
    )
    match = Q(object_type="contacts.contact", object_id__in=[str(pk) for pk in contact_ids])
    if external_ids:
        match |= Q(external_id__in=external_ids)
    return SyncEvent.objects.filter(match).delete()[0]


def erase_inbound_events(*, contact_ids: list[int], actor) -> int:
    """The inbox's rows naming the person (by email or app user id). Queued and failed rows go
    (their payload is about the person, and a queued sign-up must not bring them back), in one
    statement through those statuses' partial indexes. Applied rows name nobody (the applier
    clears their names and payload) and stay as Idempotency-Key records, so a retried request
    is answered as before instead of applied again; one applied by a version before that
    (migration 0008, a deploy's overlap) is blanked, found through a partial index of such rows."""
    people = Contact._base_manager.filter(pk__in=contact_ids).values_list("email", "external_id")
    emails = [email for email, _ in people if email]
    external_ids = [external_id for _, external_id in people if external_id]
    if not emails and not external_ids:
        return 0
    naming = Q(user_email__in=emails) | Q(user_external_id__in=external_ids)
    unapplied = Q(status=InboundEvent.Status.PENDING) | Q(status=InboundEvent.Status.FAILED)
    gone = InboundEvent.objects.filter(naming, unapplied).delete()[0]
    named = InboundEvent.objects.filter(naming, INBOX_APPLIED_NAMED)
    return gone + named.update(user_email="", user_external_id="", payload=None)
