"""integrations' handlers for the compliance data-subject registry (declared in apps.py)."""

from __future__ import annotations

from django.db.models import Q

from contacts.models import Contact
from integrations.models import SyncEvent


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
