"""Lead capture, status, ownership, and what a contact merge does to leads and deals."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from compliance.services import audit_record
from contacts.services import (
    activity_record,
    contact_find,
    contact_sync,
    contact_upsert,
    normalize_email,
    normalize_external_id,
)
from crm_platform.actor import Actor
from crm_platform.errors import ConflictError
from crm_platform.locking import locked_row
from crm_platform.outbox import outbox_publish
from leads.models import Deal, Lead, LeadStatusChange
from leads.services.assignment import lead_owner_pick

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def lead_capture(
    *,
    actor: Actor,
    source: str,
    email: str | None = None,
    external_id: str | None = None,
    assessment: dict | None = None,
    persona: str = "",
    owner=None,
    synced: tuple[str, dt.datetime] | None = None,
    **contact_fields: Any,
) -> Lead:
    """Capture a lead from `source`: find or create the contact (by email or app user id, via
    contact_upsert, which also takes `contact_fields`), reuse that contact's open lead rather
    than open a second, give a new lead an owner by the assignment rules when none is given,
    and record `lead_captured` on the timeline (whose lifecycle rule makes the contact a Lead).
    UTM values (utm_source, utm_medium, ...) go on the lead, the rest of `contact_fields` to
    the contact: as a CRM-side write now (an API or staff capture, contacts.contact_upsert), or,
    with `synced` (source, occurred_at: an inbound app event), under the conflict policy as that
    source at that time (contacts.contact_sync), so the capture does not outrank the app's own
    earlier or later writes.

    ValidationError for a bad source, assessment, persona, UTM value or contact field;
    ConflictError when the email and the app user id name two different contacts. Concurrent
    captures for one person end with one open lead."""
    errors: dict[str, list[str]] = {}
    if source not in Lead.Source.values:
        errors["source"] = [f"One of {', '.join(Lead.Source.values)}."]
    if assessment is not None and not isinstance(assessment, dict):
        errors["assessment"] = ["An object of assessment results."]
    persona = (persona or "").strip()
    if len(persona) > 100:
        errors["persona"] = ["At most 100 characters."]
    utm = {name: str(contact_fields.pop(name) or "").strip() for name in UTM_FIELDS if name in contact_fields}
    for name, value in utm.items():
        if len(value) > 100:
            errors[name] = ["At most 100 characters."]
    if owner is not None and not (owner.is_active and owner.is_staff):
        errors["owner"] = ["Leads go to active staff users."]
    if errors:
        raise ValidationError(errors)

    with transaction.atomic():
        existing = contact_find(email=normalize_email(email), external_id=normalize_external_id(external_id))
        if existing is None or not existing.source:
            contact_fields.setdefault("source", source)
        stale: list[str] = []
        occurred_at = None
        if synced is None:
            contact, _ = contact_upsert(actor=actor, email=email, external_id=external_id, **contact_fields)
        else:
            sync_source, occurred_at = synced
            contact, _, stale_fields = contact_sync(
                actor=actor,
                sync_source=sync_source,
                occurred_at=occurred_at,
                email=email,
                external_id=external_id,
                **contact_fields,
            )
            stale = sorted(stale_fields)

        lead = Lead.objects.select_for_update().filter(contact=contact, status__in=Lead.OPEN_STATUSES).first()
        created = lead is None
        if created:
            try:
                with transaction.atomic():
                    lead = Lead.objects.create(
                        contact=contact,
                        source=source,
                        owner=owner or lead_owner_pick(source=source, region=contact.region, country=contact.country),
                        assessment=assessment or {},
                        persona=persona,
                        **{name: value for name, value in utm.items() if value},
                    )
            except IntegrityError:  # a concurrent capture opened it first: reuse theirs
                lead = Lead.objects.select_for_update().get(contact=contact, status__in=Lead.OPEN_STATUSES)
                created = False
        changes: dict[str, Any] = {"source": source, "reused": not created}
        if not created:
            changes.update(
                _refresh_open_lead(lead, contact=contact, assessment=assessment, persona=persona, owner=owner, utm=utm)
            )
        audit_record(actor=actor, action="lead.capture", obj=lead, changes=changes)
        properties = {"lead_id": lead.pk, "source": source, "reused": not created}
        if stale:  # as every inbound event's entry: the fields the conflict policy kept out
            properties["_stale_fields"] = stale
        activity_record(
            contact=contact,
            type="lead_captured",
            actor=actor,
            occurred_at=occurred_at,  # a synced capture is dated when it happened at its source
            source=source,
            properties=properties,
        )
        contact.refresh_from_db()  # the lifecycle rule may have moved them on
        lead.contact = contact
        outbox_publish(
            topic="lead.captured", obj=lead, payload={**lead_payload(lead), "reused": not created}, actor=actor
        )
    lead.stale_fields = stale  # not a column: the synced fields the conflict policy kept out
    return lead


def _refresh_open_lead(lead: Lead, *, contact, assessment, persona, owner, utm) -> dict[str, Any]:
    """A second capture of an open lead: the latest assessment and persona win; the first
    touch's UTM values stay; an owner is set when given, or picked when the lead has none."""
    changed: dict[str, Any] = {}
    if assessment is not None and assessment != lead.assessment:
        lead.assessment, changed["assessment"] = assessment, True
    if persona and persona != lead.persona:
        changed["persona"], lead.persona = (lead.persona, persona), persona
    for name, value in utm.items():
        if value and not getattr(lead, name):
            setattr(lead, name, value)
            changed[name] = value
    if owner is None and lead.owner_id is None:
        owner = lead_owner_pick(source=lead.source, region=contact.region, country=contact.country)
    if owner is not None and owner.pk != lead.owner_id:
        changed["owner"], lead.owner = (lead.owner_id, owner.pk), owner
    if changed:
        lead.save()
    return changed


def lead_set_status(*, lead: Lead, status: str, actor: Actor, reason: str = "") -> Lead:
    """Move a lead to `status` and record it. The same status does nothing. A converted lead
    stays converted (ValidationError); reopening a lead while the contact has another open
    lead is a ConflictError naming it."""
    if status not in Lead.Status.values:
        raise ValidationError({"status": [f"One of {', '.join(Lead.Status.values)}."]})
    reason = (reason or "").strip()
    if len(reason) > 200:
        raise ValidationError({"reason": ["At most 200 characters."]})
    with transaction.atomic():
        locked = locked_row(Lead.objects.select_for_update().select_related("contact"), lead.pk)
        if locked.status == status:
            return locked
        if locked.status == Lead.Status.CONVERTED:
            raise ValidationError({"status": ["A converted lead stays converted."]})
        from_status = locked.status
        if status in Lead.OPEN_STATUSES and from_status not in Lead.OPEN_STATUSES:
            other = Lead.objects.filter(contact_id=locked.contact_id, status__in=Lead.OPEN_STATUSES).first()
            if other is not None:
                raise _open_lead_conflict(other)
        locked.status = status
        try:
            with transaction.atomic():
                locked.save(update_fields=["status", "updated_at"])
        except IntegrityError:  # another lead of this contact was opened meanwhile
            other = Lead.objects.filter(contact_id=locked.contact_id, status__in=Lead.OPEN_STATUSES).first()
            raise _open_lead_conflict(other) from None
        LeadStatusChange.objects.create(
            lead=locked,
            from_status=from_status,
            to_status=status,
            actor_kind=actor.kind,
            actor_id=str(actor.id)[:64],
            reason=reason,
        )
        audit_record(actor=actor, action="lead.status", obj=locked, changes={"status": (from_status, status)})
        outbox_publish(
            topic="lead.status_updated",
            obj=locked,
            payload={**lead_payload(locked), "from": from_status, "to": status},
            actor=actor,
        )
    return locked


def _open_lead_conflict(other: Lead | None) -> ConflictError:
    return ConflictError(
        "This contact already has an open lead; close it before reopening this one.",
        fields={"status": [f"lead {other.pk}" if other else "another open lead"]},
        code="open_lead_exists",
    )


def lead_assign(*, lead: Lead, owner, actor: Actor) -> Lead:
    """Give a lead to `owner` (a staff user), or take it from whoever has it (None)."""
    if owner is not None and not (owner.is_active and owner.is_staff):
        raise ValidationError({"owner": ["Leads go to active staff users."]})
    with transaction.atomic():
        locked = locked_row(Lead.objects.select_for_update().select_related("contact"), lead.pk)
        new_id = owner.pk if owner is not None else None
        if locked.owner_id == new_id:
            return locked
        old_id = locked.owner_id
        locked.owner = owner
        locked.save(update_fields=["owner", "updated_at"])
        audit_record(actor=actor, action="lead.assign", obj=locked, changes={"owner": (old_id, new_id)})
        outbox_publish(topic="lead.assigned", obj=locked, payload=lead_payload(locked), actor=actor)
    return locked


_UNSET = object()


def lead_update(*, lead: Lead, actor: Actor, status: str | None = None, reason: str = "", owner=_UNSET) -> Lead:
    """Change a lead's status (with `reason`) and/or owner in one transaction: lead_set_status
    and lead_assign, with their checks."""
    with transaction.atomic():
        if owner is not _UNSET:
            lead = lead_assign(lead=lead, owner=owner, actor=actor)
        if status is not None:
            lead = lead_set_status(lead=lead, status=status, reason=reason, actor=actor)
    return lead


def lead_payload(lead: Lead) -> dict[str, Any]:
    """What other systems hear about a lead (the PHI guard filters it per destination). The
    assessment stays home: it is medical."""
    contact = lead.contact
    return {
        "id": lead.pk,
        "contact": contact.pk,
        "email": contact.email,
        "external_id": contact.external_id,
        "source": lead.source,
        "status": lead.status,
        "owner": lead.owner_id,
        "persona": lead.persona,
        "created_at": lead.created_at.isoformat(),
    }


def leads_merge_contacts(*, loser_id: int, survivor_id: int, actor: Actor) -> None:
    """contacts' merge handler: the loser's leads and deals move to the survivor. When both
    have an open lead, the survivor's stays open and the loser's is closed as unqualified,
    with the reason in its history. Runs inside the merge's transaction, as the merge's actor."""
    kept = Lead.objects.select_for_update().filter(contact_id=survivor_id, status__in=Lead.OPEN_STATUSES).first()
    if kept is not None:
        duplicates = list(Lead.objects.select_for_update().filter(contact_id=loser_id, status__in=Lead.OPEN_STATUSES))
        now = timezone.now()
        for lead in duplicates:
            LeadStatusChange.objects.create(
                lead=lead,
                from_status=lead.status,
                to_status=Lead.Status.UNQUALIFIED,
                actor_kind=actor.kind,
                actor_id=actor.id,
                reason=f"Contacts merged; lead {kept.pk} stays open.",
                at=now,
            )
            audit_record(actor=actor, action="lead.status", obj=lead, changes={"status": (lead.status, "unqualified")})
        Lead.objects.filter(pk__in=[lead.pk for lead in duplicates]).update(
            status=Lead.Status.UNQUALIFIED, updated_at=now
        )
    Lead.objects.filter(contact_id=loser_id).update(contact_id=survivor_id)
    Deal.objects.filter(contact_id=loser_id).update(contact_id=survivor_id)
