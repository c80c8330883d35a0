"""Consent, restriction of processing, and the one answer to "may we process this person for
this purpose on this channel?" (`can_process`).

Who asks: campaigns and SMS before each send (at send time, not when a message is queued, so a
revocation reaches every message not yet sent), provider adapters before pushing a contact
(purpose `provider_sync`), the AI assistant before using a person's data (`ai_processing`),
analytics before tracking. Compliance/README.md shows the calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from compliance.models_privacy import Consent, ProcessingRestriction
from compliance.services import audit_record
from compliance.subjects import subject_model
from compliance.suppression import suppressed_values
from crm_platform.actor import Actor
from crm_platform.errors import ConflictError
from crm_platform.outbox import outbox_publish

Purpose = Consent.Purpose
Channel = Consent.Channel

# Not a consent purpose: pushing the contact to a connected CRM or marketing tool rests on
# legitimate interest, so only a restriction (Art. 18) or the suppression list stops it.
PROVIDER_SYNC = "provider_sync"
PURPOSES = (*Purpose.values, PROVIDER_SYNC)

# Purposes a restriction of processing (Art. 18) stops. Transactional messages go on: they
# serve the contract the person has with the company.
RESTRICTED_PURPOSES = frozenset(
    {
        Purpose.MARKETING_EMAIL,
        Purpose.MARKETING_SMS,
        Purpose.ANALYTICS,
        Purpose.THIRD_PARTY_SHARING,
        Purpose.AI_PROCESSING,
        PROVIDER_SYNC,
    }
)
# Purposes allowed without a recorded grant (legal basis: contract or legitimate interest);
# an explicit revocation still stops them. Every other purpose needs a grant (opt-in).
NO_CONSENT_NEEDED = frozenset({Purpose.TRANSACTIONAL, PROVIDER_SYNC})

# The channel a purpose implies when the caller does not name one.
DEFAULT_CHANNEL = {Purpose.MARKETING_EMAIL: Channel.EMAIL, Purpose.MARKETING_SMS: Channel.SMS}


@dataclass(frozen=True)
class Decision:
    """can_process's answer: truthy when allowed; `reason` says why (for logs and the admin)."""

    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


# ----------------------------------------------------------------------------- consent


def _contact_model():
    return apps.get_model(subject_model().model_label)


def _check_decision(purpose: str, channel: str, third_party: str) -> tuple[str, str]:
    errors = {}
    if purpose not in Purpose.values:
        errors["purpose"] = [f"One of {', '.join(Purpose.values)}."]
    channel = channel or DEFAULT_CHANNEL.get(purpose, Channel.ANY)
    if channel not in Channel.values:
        errors["channel"] = [f"One of {', '.join(Channel.values)}."]
    if purpose == Purpose.THIRD_PARTY_SHARING and not third_party.strip():
        errors["third_party"] = ["Sharing with a third party names that third party."]
    if purpose != Purpose.THIRD_PARTY_SHARING and third_party:
        errors["third_party"] = ["Only sharing with a third party names one."]
    if errors:
        raise ValidationError(errors)
    return channel, third_party.strip()


def consent_record(
    *,
    contact,
    purpose: str,
    granted: bool,
    source: str,
    actor: Actor,
    channel: str = "",
    third_party: str = "",
    ip: str | None = None,
    user_agent: str = "",
    text_version: str = "",
    at=None,
) -> tuple[Consent, bool]:
    """Record one consent decision. Returns (the current row, changed). A decision equal to
    the current one changes nothing (no new row). ValidationError for an unknown purpose or
    channel, a missing source, a share without a named third party, or a marketing-SMS grant
    without the text version shown (TCPA: express written consent needs the disclosure)."""
    channel, third_party = _check_decision(purpose, channel, third_party)
    if not source or not str(source).strip():
        raise ValidationError({"source": ["Say where the decision was taken (signup form, app settings, ...)."]})
    if granted and purpose == Purpose.MARKETING_SMS and not text_version:
        raise ValidationError({"text_version": ["A marketing SMS grant records the consent text version shown."]})
    at = at or timezone.now()
    with transaction.atomic():
        current = (
            Consent.objects.select_for_update()
            .filter(contact=contact, purpose=purpose, channel=channel, third_party=third_party, is_current=True)
            .first()
        )
        if current is not None and current.granted == granted:
            return current, False
        if current is not None:
            Consent.objects.filter(pk=current.pk).update(is_current=False)
        try:
            with transaction.atomic():
                row = Consent.objects.create(
                    contact=contact,
                    purpose=purpose,
                    channel=channel,
                    third_party=third_party,
                    granted=granted,
                    source=str(source).strip()[:100],
                    proof_ip=ip,
                    proof_user_agent=(user_agent or "")[:400],
                    text_version=(text_version or "")[:100],
                    granted_at=at if granted else None,
                    revoked_at=None if granted else at,
                    actor_kind=actor.kind,
                    actor_id=str(actor.id)[:64],
                )
        except IntegrityError:
            raise ConflictError("Another change to this consent happened at the same time; try again.") from None
        audit_record(
            actor=actor,
            action="consent.grant" if granted else "consent.revoke",
            obj=row,
            changes={
                "contact": contact.pk,
                "purpose": purpose,
                "channel": channel,
                "third_party": third_party,
                "source": row.source,
                "text_version": row.text_version,
            },
        )
    return row, True


def consent_grant(*, contact, purpose: str, source: str, actor: Actor, **proof) -> Consent:
    """The person agreed to `purpose` (see consent_record for the contract)."""
    return consent_record(contact=contact, purpose=purpose, granted=True, source=source, actor=actor, **proof)[0]


def consent_revoke(*, contact, purpose: str, source: str, actor: Actor, **proof) -> Consent:
    """The person withdrew (or refused) `purpose`. Takes effect for every message not yet
    sent, because senders ask can_process at send time."""
    return consent_record(contact=contact, purpose=purpose, granted=False, source=source, actor=actor, **proof)[0]


def consents_merge(*, loser_id: int, survivor_id: int, actor: Actor) -> None:
    """contacts' merge handler: the loser's consent history, restrictions and legal holds move
    to the survivor. For each purpose/channel the most recent decision of either becomes the
    current one (the person's latest word); an active restriction or hold of either stays active."""
    moved = list(Consent.objects.filter(contact_id=loser_id).values_list("purpose", "channel", "third_party"))
    Consent.objects.filter(contact_id=loser_id).update(contact_id=survivor_id, is_current=False)
    for purpose, channel, third_party in set(moved):
        rows = Consent.objects.filter(
            contact_id=survivor_id, purpose=purpose, channel=channel, third_party=third_party
        ).order_by("-recorded_at", "-id")
        latest = rows.first()
        rows.exclude(pk=latest.pk).filter(is_current=True).update(is_current=False)
        Consent.objects.filter(pk=latest.pk).update(is_current=True)
    active = ProcessingRestriction.objects.filter(lifted_at__isnull=True)
    if active.filter(contact_id=survivor_id).exists():
        active.filter(contact_id=loser_id).update(
            lifted_at=timezone.now(), lifted_by_kind=actor.kind, lifted_by_id=f"merged into {survivor_id}"[:64]
        )
    ProcessingRestriction.objects.filter(contact_id=loser_id).update(contact_id=survivor_id)
    from compliance.models_privacy import ExportBundle, LegalHold

    LegalHold.objects.filter(contact_id=loser_id).update(contact_id=survivor_id)
    ExportBundle.objects.filter(contact_id=loser_id).update(contact_id=survivor_id)
    if moved:
        audit_record(
            actor=actor,
            action="consent.merge",
            object_type="contacts.contact",
            object_id=survivor_id,
            changes={"loser": loser_id, "moved": len(moved)},
        )


def consent_current(*, contact) -> list[Consent]:
    return list(Consent.objects.filter(contact=contact, is_current=True).order_by("purpose", "channel", "third_party"))


# ----------------------------------------------------------------------------- restriction


def restriction_set(*, contact, reason: str, actor: Actor) -> tuple[ProcessingRestriction, bool]:
    """Restrict processing (Art. 18) until lifted. Returns (the active restriction, created);
    a contact already restricted keeps its restriction. ValidationError without a reason."""
    if not reason or not reason.strip():
        raise ValidationError({"reason": ["Say why processing is restricted (the request, the dispute)."]})
    with transaction.atomic():
        existing = ProcessingRestriction.objects.filter(contact=contact, lifted_at__isnull=True).first()
        if existing is not None:
            return existing, False
        try:
            with transaction.atomic():
                restriction = ProcessingRestriction.objects.create(
                    contact=contact,
                    reason=reason.strip()[:300],
                    placed_by_kind=actor.kind,
                    placed_by_id=str(actor.id)[:64],
                )
        except IntegrityError:  # restricted concurrently: the same outcome
            return ProcessingRestriction.objects.get(contact=contact, lifted_at__isnull=True), False
        audit_record(actor=actor, action="restriction.set", obj=restriction, changes={"contact": contact.pk})
    return restriction, True


def restriction_lift(*, contact, actor: Actor) -> ProcessingRestriction | None:
    """Lift the contact's active restriction; returns it, or None when there was none.

    The outbox relay withheld every message about the contact produced while restricted
    (integrations.relay), so the destinations may hold an old copy: the contact's current state
    goes out once, as `contact.updated` naming every field changed."""
    with transaction.atomic():
        # The contact's row first (a merge, too, locks contacts before their restrictions): a
        # change still being written commits before its state is read below, else its message,
        # produced while restricted, is withheld and the catch-up misses it.
        contact = type(contact)._base_manager.select_for_update().filter(pk=contact.pk).first()
        if contact is None:
            return None
        restriction = (
            ProcessingRestriction.objects.select_for_update().filter(contact=contact, lifted_at__isnull=True).first()
        )
        if restriction is None:
            return None
        restriction.lifted_at = timezone.now()
        restriction.lifted_by_kind = actor.kind
        restriction.lifted_by_id = str(actor.id)[:64]
        restriction.save(update_fields=["lifted_at", "lifted_by_kind", "lifted_by_id"])
        audit_record(actor=actor, action="restriction.lift", obj=restriction, changes={"contact": contact.pk})
        payload = subject_model().payload
        if payload is not None:
            state = payload(contact)
            # What changed while restricted is not known here: a receiver that applies only the
            # named fields must take them all.
            changed = sorted(name for name in state if name != "id")
            outbox_publish(topic="contact.updated", obj=contact, payload={**state, "changed": changed}, actor=actor)
    return restriction


def is_restricted(contact_id: int) -> bool:
    return ProcessingRestriction.objects.filter(contact_id=contact_id, lifted_at__isnull=True).exists()


def restricted_when(moments: Mapping[Hashable, tuple[int, datetime]]) -> set[Hashable]:
    """Of these (contact id, moment) pairs, by key, the ones whose person is restricted now or
    was at that moment (a restriction lifted since). The person is the contact and every
    contact it was merged into: a merge moves the restriction to the survivor (consents_merge)
    while the merged-away contact's messages may still be queued. The outbox relay asks it for
    each batch of messages (key: the message, moment: when it was produced): one small query
    when nobody was restricted since the oldest moment, three otherwise, whatever the count."""
    if not moments:
        return set()
    oldest = min(at for _, at in moments.values())
    relevant = ProcessingRestriction.objects.filter(Q(lifted_at__isnull=True) | Q(lifted_at__gt=oldest))
    if not relevant.exists():  # the common case, one small query: nobody restricted lately
        return set()
    people = _survivors({contact_id for contact_id, _ in moments.values()})
    spans: dict[int, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    for contact_id, placed_at, lifted_at in relevant.filter(contact_id__in=set().union(*people.values())).values_list(
        "contact_id", "placed_at", "lifted_at"
    ):
        spans[contact_id].append((placed_at, lifted_at))
    return {
        key
        for key, (contact_id, at) in moments.items()
        if any(
            lifted is None or placed <= at < lifted
            for person in people[contact_id]
            for placed, lifted in spans.get(person, ())
        )
    }


def _survivors(contact_ids: set[int]) -> dict[int, set[int]]:
    """{contact id: itself and every contact its merges lead to} (one recursive query over the
    merged-away ones; a contact never merged costs one primary key probe)."""
    found = {contact_id: {contact_id} for contact_id in contact_ids}
    subject = subject_model()
    if subject.merged_into is None:
        return found
    model = apps.get_model(subject.model_label)
    table, merged = model._meta.db_table, model._meta.get_field(subject.merged_into).column
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE chain(origin, id) AS ("  # noqa: S608 - names from the model
            f"SELECT c.id, c.{merged} FROM {table} c WHERE c.id = ANY(%s) AND c.{merged} IS NOT NULL "
            f"UNION SELECT chain.origin, c.{merged} FROM chain JOIN {table} c ON c.id = chain.id "
            f"WHERE c.{merged} IS NOT NULL) SELECT origin, id FROM chain",
            [sorted(contact_ids)],
        )
        for origin, survivor in cursor.fetchall():
            found[origin].add(survivor)
    return found


# ----------------------------------------------------------------------------- can_process


def can_process(contact, purpose: str, channel: str = "", *, third_party: str = "") -> Decision:
    """May we process `contact` (an instance or an id) for `purpose` on `channel` now?

    In order: a suppressed email or phone stops everything; an active restriction stops
    marketing, analytics, sharing, AI and provider sync; transactional messages and provider
    sync need no consent (contract, legitimate interest) but an explicit revocation stops them;
    every other purpose needs a current grant for the channel (or for any channel; a decision
    for the exact channel wins). ValueError for an unknown purpose (a programming error)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown processing purpose {purpose!r}; one of {PURPOSES}")
    contact_id = contact.pk if hasattr(contact, "pk") else int(contact)
    return processable_ids([contact_id], purpose, channel, third_party)[contact_id]


def processable_ids(
    contact_ids: Iterable[int], purpose: str, channel: str = "", third_party: str = ""
) -> dict[int, Decision]:
    """can_process for many contacts in three queries (campaign sends, sync batches): a
    Decision per id. Unknown ids are refused ("unknown contact")."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown processing purpose {purpose!r}; one of {PURPOSES}")
    ids = list(dict.fromkeys(int(i) for i in contact_ids))
    channel = channel or DEFAULT_CHANNEL.get(purpose, Channel.ANY)
    subject = subject_model()
    rows = {
        row["pk"]: row for row in _contact_model().objects.filter(pk__in=ids).values("pk", subject.email, subject.phone)
    }
    suppressed = suppressed_values(
        emails=[r[subject.email] for r in rows.values()], phones=[r[subject.phone] for r in rows.values()]
    )
    restricted = set()
    if purpose in RESTRICTED_PURPOSES:
        restricted = set(
            ProcessingRestriction.objects.filter(contact_id__in=list(rows), lifted_at__isnull=True).values_list(
                "contact_id", flat=True
            )
        )
    decisions: dict[tuple[int, str], bool] = {}
    if purpose in Purpose.values:
        for contact_id, row_channel, granted in Consent.objects.filter(
            Q(channel=channel) | Q(channel=Channel.ANY),
            contact_id__in=list(rows),
            purpose=purpose,
            third_party=third_party,
            is_current=True,
        ).values_list("contact_id", "channel", "granted"):
            decisions[(contact_id, row_channel)] = granted
    answers = {}
    for contact_id in ids:
        row = rows.get(contact_id)
        if row is None:
            answers[contact_id] = Decision(False, "unknown contact")
        elif row[subject.email] in suppressed or row[subject.phone] in suppressed:
            answers[contact_id] = Decision(False, "suppressed")
        elif contact_id in restricted:
            answers[contact_id] = Decision(False, "processing restricted")
        else:
            answers[contact_id] = _by_consent(decisions, contact_id, purpose, channel)
    return answers


def _by_consent(decisions: dict, contact_id: int, purpose: str, channel: str) -> Decision:
    decided = decisions.get((contact_id, channel), decisions.get((contact_id, Channel.ANY)))
    if purpose in NO_CONSENT_NEEDED:
        if decided is False:
            return Decision(False, "consent revoked")
        return Decision(True, "legal basis: contract" if purpose == Purpose.TRANSACTIONAL else "legitimate interest")
    if decided is True:
        return Decision(True, "consent granted")
    return Decision(False, "consent revoked" if decided is False else "no consent")
