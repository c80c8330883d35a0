"""contacts' handlers for the compliance data-subject registry (declared in apps.py): what
erasure and export do with rows that the generic handlers cannot reach (generic relations,
rows with two links to contacts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db.models import Model, Q, QuerySet

from contacts.models import (
    Activity,
    Contact,
    ContactDuplicateDismissal,
    ExternalRef,
    Note,
    Order,
    Subscription,
    Ticket,
)

# The person's objects (besides the contact itself) whose provider ids (ExternalRef: a Zendesk
# ticket id, a Stripe payment id...) are about the person. Each is registered for erasure with
# `erase_with_refs`, so its refs go in the same step as the rows they point at.
REF_MODELS: tuple[type[Model], ...] = (Activity, Note, Ticket, Order, Subscription)
_REF = ExternalRef._meta.label_lower


def _refs_of(model: type[Model], ids) -> QuerySet:
    """The refs of `model`'s rows with these ids (a list or a subquery of pks): one indexed
    lookup (extref_object_idx)."""
    return ExternalRef.objects.filter(content_type=ContentType.objects.get_for_model(model), object_id__in=ids)


def _ref_sets(contact_ids: list[int]) -> list[QuerySet]:
    """The refs of the contacts and of each of their objects, one queryset per model: separate
    arms rather than one OR, so each is an index lookup, not a scan of every ref."""
    sets = [_refs_of(Contact, contact_ids)]
    for model in REF_MODELS:
        sets.append(_refs_of(model, model._base_manager.filter(contact_id__in=contact_ids).values("pk")))
    return sets


def _values(contact_ids: list[int], *fields: str) -> list[tuple]:
    first, *rest = [refs.order_by().values_list(*fields) for refs in _ref_sets(contact_ids)]
    return list(first.union(*rest, all=True))


def provider_refs(*, contact_ids: list[int]) -> list[dict[str, str]]:
    """The person's ids at providers (sent, encrypted, with contact.deleted)."""
    return [
        {"provider": p, "object_type": t, "external_id": e}
        for p, t, e in _values(contact_ids, "provider", "object_type", "external_id")
    ]


def erase_external_refs(*, contact_ids: list[int], actor) -> int:
    """The refs of the contacts, and of those of their objects still there (erase_with_refs has
    taken the refs of the objects already erased): correct whichever handler runs first."""
    return sum(refs.delete()[0] for refs in _ref_sets(contact_ids))


def erase_with_refs(model: type[Model]) -> Callable[..., dict[str, int]]:
    """The erase handler of `model` (FK `contact`): the person's rows go, and their provider ids
    with them, so no ref outlives its object whatever order the registry runs handlers in
    (erasing an object's refs after it is gone would no longer find them). Returns rows erased
    per table."""

    def erase(*, contact_ids: list[int], actor) -> dict[str, int]:
        rows = model._base_manager.filter(contact_id__in=contact_ids)
        counts = {_REF: _refs_of(model, rows.values("pk")).delete()[0]}
        for label, n in rows.delete()[1].items():
            counts[label.lower()] = counts.get(label.lower(), 0) + n
        return counts

    erase.__qualname__ = erase.__name__ = f"erase_{model._meta.model_name}_with_refs"
    return erase


_EXPORTED = ("provider", "object_type", "external_id", "object_id", "created_at")


def export_external_refs(*, contact_ids: list[int]) -> list[dict[str, Any]]:
    """The refs of the contacts and of all their objects (tickets, orders...), oldest first."""
    rows = [dict(zip(_EXPORTED, row, strict=True)) for row in _values(contact_ids, *_EXPORTED)]
    return sorted(rows, key=lambda row: (row["created_at"], row["object_type"], row["external_id"]))


def erase_duplicate_dismissals(*, contact_ids: list[int], actor) -> int:
    return ContactDuplicateDismissal.objects.filter(
        Q(first_id__in=contact_ids) | Q(second_id__in=contact_ids)
    ).delete()[0]
