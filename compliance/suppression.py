"""The suppression list: emails, phones and app user ids that must not come back, stored as
keyed hashes.

Erasure adds the person's email, phone and app user id (else the app's next event naming them
by id alone would make them again); imports, bulk upserts, contact creation and
provider syncs refuse a suppressed value (`suppression_check`, `suppressed_values`); messaging
never reaches one (`compliance.consent.can_process`). The person signing up again in the app
(`account_created`) lifts it (`suppression_lift`), audited.

Values are normalised by the caller the way contacts stores them (email lower-cased and
trimmed, phone in E.164); `_normalise` repeats the cheap part so a stray capital or space
cannot slip past.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from compliance.crypto import hmac_digest
from compliance.models_privacy import Suppression
from compliance.services import audit_record
from crm_platform.actor import Actor

REFUSED = "This {kind} is on the suppression list (its owner asked to be erased); it cannot be added again."


def _normalise(kind: str, value: str) -> str:
    value = str(value).strip()
    if kind == Suppression.Kind.EMAIL:
        return value.lower()
    if kind == Suppression.Kind.EXTERNAL_ID:
        return value
    return "".join(ch for ch in value if ch == "+" or ch.isdigit())


def digest(kind: str, value: str) -> str:
    return hmac_digest(f"{kind}:{_normalise(kind, value)}")


def _pairs(
    emails: Iterable[str | None] = (), phones: Iterable[str | None] = (), external_ids: Iterable[str | None] = ()
) -> list[tuple[str, str, str]]:
    kinds = (
        (Suppression.Kind.EMAIL, emails),
        (Suppression.Kind.PHONE, phones),
        (Suppression.Kind.EXTERNAL_ID, external_ids),
    )
    return [(kind, v, digest(kind, v)) for kind, values in kinds for v in values if v]


def suppressed_values(
    *, emails: Iterable[str | None] = (), phones: Iterable[str | None] = (), external_ids: Iterable[str | None] = ()
) -> set[str]:
    """The given emails, phones and app user ids that are suppressed (one query, whatever the count)."""
    pairs = _pairs(emails, phones, external_ids)
    if not pairs:
        return set()
    # = ANY(array): one parameter; Django's __in builds a placeholder and a prepared value per
    # digest, a tenth of a second for a 1,000-contact bulk upsert.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT kind, digest FROM {Suppression._meta.db_table} "  # noqa: S608 - our table's name
            "WHERE lifted_at IS NULL AND digest = ANY(%s::varchar[])",
            [sorted({d for _, _, d in pairs})],
        )
        found = set(cursor.fetchall())
    return {value for kind, value, d in pairs if (kind, d) in found}


# How a refusal names each kind (the field it was given as).
KIND_NAMES = {"email": "email address", "phone": "phone number", "external_id": "app user id"}


def suppression_check(*, email: str | None = None, phone: str | None = None, external_id: str | None = None) -> None:
    """Raise ValidationError naming the field when the email, phone or app user id is suppressed."""
    given = {"email": email, "phone": phone, "external_id": external_id}
    hits = suppressed_values(emails=[email], phones=[phone], external_ids=[external_id])
    errors = {
        field: [REFUSED.format(kind=KIND_NAMES[field])] for field, value in given.items() if value and value in hits
    }
    if errors:
        raise ValidationError(errors)


def suppression_add(
    *,
    actor: Actor,
    email: str | None = None,
    phone: str | None = None,
    external_id: str | None = None,
    reason: str = "erasure",
) -> int:
    """Suppress an email, phone and/or app user id (idempotent: one active entry per value).
    Returns how many entries were added. Runs in the caller's transaction."""
    added = 0
    for kind, _, value_digest in _pairs([email], [phone], [external_id]):
        if Suppression.objects.filter(kind=kind, digest=value_digest, lifted_at__isnull=True).exists():
            continue
        try:
            with transaction.atomic():
                entry = Suppression.objects.create(kind=kind, digest=value_digest, reason=reason[:30])
        except IntegrityError:  # suppressed concurrently: the same outcome
            continue
        audit_record(actor=actor, action="suppression.add", obj=entry, changes={"kind": kind, "reason": reason})
        added += 1
    return added


def suppression_lift(
    *,
    actor: Actor,
    reason: str,
    email: str | None = None,
    phone: str | None = None,
    external_id: str | None = None,
) -> int:
    """Lift the suppression of an email, phone and/or app user id (the person signed up again).
    Returns how many entries were lifted; the entries stay, marked lifted, as history."""
    lifted = 0
    with transaction.atomic():
        for kind, _, value_digest in _pairs([email], [phone], [external_id]):
            entries = list(
                Suppression.objects.select_for_update().filter(kind=kind, digest=value_digest, lifted_at__isnull=True)
            )
            for entry in entries:
                entry.lifted_at = timezone.now()
                entry.lifted_reason = reason[:100]
                entry.save(update_fields=["lifted_at", "lifted_reason"])
                audit_record(
                    actor=actor, action="suppression.lift", obj=entry, changes={"kind": kind, "reason": reason}
                )
                lifted += 1
    return lifted
