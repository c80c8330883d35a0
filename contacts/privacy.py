"""contacts' handlers for the compliance data-subject registry (declared in apps.py): what
erasure and export do with rows that the generic handlers cannot reach (generic relations,
rows with two links to contacts)."""

from __future__ import annotations

from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db.models import Q

from contacts.models import Contact, ContactDuplicateDismissal, ExternalRef, Note, Order, Subscription, Ticket

# Our objects whose provider ids (ExternalRef) are about the person.
_REF_MODELS = (Contact, Ticket, Order, Subscription, Note)


def _refs(contact_ids: list[int]):
    match = Q()
    for model in _REF_MODELS:
        ids = contact_ids if model is Contact else model.objects.filter(contact_id__in=contact_ids).values("pk")
        match |= Q(content_type=ContentType.objects.get_for_model(model), object_id__in=ids)
    return ExternalRef.objects.filter(match)


def provider_refs(*, contact_ids: list[int]) -> list[dict[str, str]]:
    """The person's ids at providers (sent, encrypted, with contact.deleted)."""
    return [
        {"provider": p, "object_type": t, "external_id": e}
        for p, t, e in _refs(contact_ids).values_list("provider", "object_type", "external_id")
    ]


def erase_external_refs(*, contact_ids: list[int], actor) -> int:
    return _refs(contact_ids).delete()[0]


def export_external_refs(*, contact_ids: list[int]) -> list[dict[str, Any]]:
    return list(_refs(contact_ids).values("provider", "object_type", "external_id", "object_id", "created_at"))


def erase_duplicate_dismissals(*, contact_ids: list[int], actor) -> int:
    return ContactDuplicateDismissal.objects.filter(
        Q(first_id__in=contact_ids) | Q(second_id__in=contact_ids)
    ).delete()[0]
