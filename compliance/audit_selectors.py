"""Reads of the audit log: the API's filtered list, a contact's trail, who viewed a patient."""

from __future__ import annotations

from datetime import UTC, datetime, time

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from compliance.models import AuditEvent
from compliance.phi_reads import PHI_READ

ACTOR_KINDS = {choice.value for choice in AuditEvent.ActorKind}


def _pair(value: str, name: str) -> tuple[str, str]:
    kind, sep, ident = value.partition(":")
    if not sep or not kind or not ident:
        raise ValidationError({name: [f"Use {name}=<type>:<id>."]})
    return kind, ident


def audit_event_list(*, object: str = "", actor: str = "", since: str = "", action: str = "") -> QuerySet[AuditEvent]:
    """Audit events, newest first, filtered by `object` ("contacts.contact:12"), `actor`
    ("user:5", "api_key:3"), `since` (ISO date or date-time) and `action`. Raises
    ValidationError naming the bad parameter."""
    queryset = AuditEvent.objects.all()
    if object:
        object_type, object_id = _pair(object, "object")
        queryset = queryset.filter(object_type=object_type.lower(), object_id=object_id)
    if actor:
        kind, ident = _pair(actor, "actor")
        if kind not in ACTOR_KINDS:
            raise ValidationError({"actor": [f"Actor kind is one of {', '.join(sorted(ACTOR_KINDS))}."]})
        queryset = queryset.filter(actor_kind=kind, actor_id=ident)
    if since:
        try:
            moment = parse_datetime(since) or parse_date(since)
        except ValueError:
            moment = None
        if moment is None:
            raise ValidationError({"since": ["Use an ISO 8601 date or date-time."]})
        if not isinstance(moment, datetime):
            moment = datetime.combine(moment, time.min)
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment, UTC)
        try:  # in UTC: PostgreSQL refuses an offset beyond 15:59, which Python reads
            moment = moment.astimezone(UTC)
        except OverflowError:
            raise ValidationError({"since": ["A moment between the years 1 and 9999 in UTC."]}) from None
        queryset = queryset.filter(occurred_at__gte=moment)
    if action:
        queryset = queryset.filter(action=action)
    return queryset


def audit_events_for_contact(*, contact_id: int) -> QuerySet[AuditEvent]:
    """Everything the audit log holds about one contact: the contact itself and the records
    that belong to it (audit rows carry the contact as `subject_id`), newest first."""
    return AuditEvent.objects.filter(subject_id=contact_id).order_by("-id")


def phi_reads_for_contact(*, contact_id: int, limit: int = 500) -> list[AuditEvent]:
    """Who viewed this patient: the `phi.read` rows about the contact and its notes, tickets,
    activities (and any other record of theirs), newest first."""
    return list(audit_events_for_contact(contact_id=contact_id).filter(action=PHI_READ)[:limit])


def phi_read_fields(event: AuditEvent) -> dict:
    """The fields, channel and access of a phi.read row (audit rows keep them as new values)."""
    changes = event.changes or {}

    def value(key):
        entry = changes.get(key)
        return entry.get("new") if isinstance(entry, dict) else entry

    return {"fields": value("fields") or [], "channel": value("channel") or "", "access": value("access") or ""}
