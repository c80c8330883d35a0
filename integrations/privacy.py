"""integrations' handlers for the compliance data-subject registry (declared in apps.py)."""

from __future__ import annotations

from django.db.models import Q

from contacts.models import Contact
from integrations.models import InboundEvent, SyncEvent


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
    """The inbox's rows naming the person (by email or app user id): queued and failed rows,
    whose payload is about the person (and a queued sign-up must not bring them back). Each
    status is looked up by its own partial index. Applied rows name nobody (the applier clears
    their names and payload), and stay as Idempotency-Key records, so a retried request is
    answered as before instead of applied again."""
    people = Contact._base_manager.filter(pk__in=contact_ids).values_list("email", "external_id")
    emails = [email for email, _ in people if email]
    external_ids = [external_id for _, external_id in people if external_id]
    if not emails and not external_ids:
        return 0
    naming = Q(user_email__in=emails) | Q(user_external_id__in=external_ids)
    return sum(
        InboundEvent.objects.filter(naming, status=status).delete()[0]
        for status in (InboundEvent.Status.PENDING, InboundEvent.Status.FAILED)
    )
