"""Every write to contacts and their timeline. Each service takes an `actor`, runs in one
transaction, writes its audit row there, and raises ValidationError (400) or ConflictError
(409) before writing anything."""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.http import Http404
from django.utils import timezone

from compliance.services import audit_record
from compliance.suppression import suppression_check
from contacts import conflict, lifecycle
from contacts.models import (
    Activity,
    Company,
    Contact,
    CustomFieldDefinition,
    LifecycleRule,
    LifecycleTransition,
    Note,
    Order,
    Subscription,
    Ticket,
)
from crm_platform.actor import Actor
from crm_platform.errors import ConflictError
from crm_platform.locking import locked_row, row_held
from crm_platform.outbox import outbox_publish

# Fields a caller may write on a contact (identity fields are handled on their own).
EDITABLE_FIELDS = frozenset(
    {
        "first_name",
        "last_name",
        "phone",
        "date_of_birth",
        "address_line1",
        "address_line2",
        "city",
        "region",
        "postal_code",
        "country",
        "time_zone",
        "language",
        "company",
        "owner",
        "company_id",
        "owner_id",
        "source",
        "engagement_tier",
        "churn_risk",
        "is_paid",
        "onboarding_status",
        "last_login_at",
        "last_active_at",
        "tags",
        "properties",
    }
)
IDENTITY_FIELDS = frozenset({"email", "external_id"})


# ----------------------------------------------------------------------------- normalizing


def normalize_email(value: str | None) -> str | None:
    """Lower-cased and trimmed, or None for empty. ValidationError when it is not an address."""
    if value is None:
        return None
    value = str(value).strip().lower()
    if not value:
        return None
    try:
        validate_email(value)
    except ValidationError:
        raise ValidationError({"email": ["Enter a valid email address."]}) from None
    return value


def normalize_phone(value: str | None, *, default_region: str | None = None) -> str:
    """E.164 (+14155550123), or "" for empty. ValidationError when it is not a possible number."""
    if not value:
        return ""
    try:
        parsed = phonenumbers.parse(str(value), (default_region or "").upper() or None)
    except phonenumbers.NumberParseException:
        raise ValidationError({"phone": ["Enter a phone number in international form, e.g. +14155550123."]}) from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError({"phone": ["This is not a valid phone number."]})
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_external_id(value: Any) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    if len(value) > 128:
        raise ValidationError({"external_id": ["At most 128 characters."]})
    return value or None


_CHECKED_FIELDS = {f.name: f for f in Contact._meta.fields if not f.is_relation}


def _clean_fields(fields: dict[str, Any], *, country: str = "", definitions: dict | None = None) -> dict[str, Any]:
    """Validate and normalize writable fields; ValidationError names every bad field."""
    unknown = set(fields) - EDITABLE_FIELDS
    errors: dict[str, list[str]] = {}
    if unknown:
        errors.update({name: ["Unknown or read-only field."] for name in sorted(unknown)})
    cleaned = {k: v for k, v in fields.items() if k in EDITABLE_FIELDS}
    if "phone" in cleaned:
        try:
            cleaned["phone"] = normalize_phone(cleaned["phone"], default_region=cleaned.get("country") or country)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    for name in ("company_id", "owner_id"):
        value = cleaned.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            errors[name.removesuffix("_id")] = ["An id."]
    if "tags" in cleaned:
        tags = cleaned["tags"] or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and 0 < len(t.strip()) <= 50 for t in tags):
            errors["tags"] = ["A list of tags of 1 to 50 characters."]
        else:
            cleaned["tags"] = sorted({t.strip().lower() for t in tags})
    if cleaned.get("country"):
        cleaned["country"] = str(cleaned["country"]).upper()
    if "properties" in cleaned:
        try:
            cleaned["properties"] = validate_properties(cleaned["properties"], definitions=definitions)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    # Field-level checks the model declares (choices, ranges, lengths).
    # What Model.clean_fields does for the given fields, without building a model instance
    # per call (a measurable share of a 1,000-row bulk upsert).
    for name, value in cleaned.items():
        field = _CHECKED_FIELDS.get(name)
        # None on a NOT NULL column is the model's "cannot be null" error (as the API's "may not
        # be null"), not a blank value: the INSERT or UPDATE would fail on it.
        if field is None or (field.blank and value in field.empty_values and (value is not None or field.null)):
            continue
        try:
            cleaned[name] = _storable(field.clean(value, None))  # the model's own conversions: text to date...
        except ValidationError as exc:
            errors.setdefault(name, exc.messages)
        except (TypeError, ValueError):  # a value of the wrong JSON type (a number for a date, ...)
            errors.setdefault("non_field_errors", ["A field has a value of the wrong type."])
    if errors:
        raise ValidationError(errors)
    return cleaned


def _storable(value: Any) -> Any:
    """A value a model field took, as PostgreSQL keeps it: a moment in UTC. ValidationError for
    what Python parses but the database would refuse or not give back: NaN (which passes every
    range check, then fails the table's), an offset beyond 15:59, a moment before year 1 or
    after 9999 in UTC."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError("A finite number.")
    if not isinstance(value, dt.datetime):
        return value
    try:
        aware = value if timezone.is_aware(value) else timezone.make_aware(value)
        return aware.astimezone(dt.UTC)
    except OverflowError:
        raise ValidationError("A moment between the years 1 and 9999 in UTC.") from None


def validate_properties(properties: Any, *, definitions: dict | None = None) -> dict[str, Any]:
    """Custom properties against the definitions staff manage. Unknown keys are refused, and so
    is an object without a value for a required field: it replaces the contact's properties,
    so every writer (create, update, bulk upsert, the admin) checks what the contact will hold."""
    if not isinstance(properties, dict):
        raise ValidationError({"properties": ["An object of custom properties."]})
    if definitions is None:
        definitions = {d.key: d for d in CustomFieldDefinition.objects.all()}
    errors = [
        f"{key}: required."
        for key, definition in definitions.items()
        if definition.required and properties.get(key) is None
    ]
    for key, value in properties.items():
        definition = definitions.get(key)
        if definition is None:
            errors.append(f"{key}: no such custom field.")
        elif value is not None and not _property_ok(definition, value):
            errors.append(
                f"{key}: expected {definition.type}" + (f" in {definition.choices}" if definition.choices else "")
            )
    if errors:
        raise ValidationError({"properties": errors})
    return properties


def _property_ok(definition: CustomFieldDefinition, value: Any) -> bool:
    kind = definition.type
    if kind == CustomFieldDefinition.Type.STRING:
        return isinstance(value, str) and len(value) <= 1000
    if kind == CustomFieldDefinition.Type.NUMBER:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == CustomFieldDefinition.Type.BOOLEAN:
        return isinstance(value, bool)
    if kind == CustomFieldDefinition.Type.DATE:
        try:
            dt.date.fromisoformat(str(value))
        except ValueError:
            return False
        return True
    return value in definition.choices


# ----------------------------------------------------------------------------- identity


def contact_find(*, email: str | None = None, external_id: str | None = None) -> Contact | None:
    """The contact these identifiers name, following merges to the survivor.

    ConflictError when the email and the external id name two different people."""
    by_email = Contact.objects.filter(email=email).first() if email else None
    by_external = Contact.objects.filter(external_id=external_id).first() if external_id else None
    by_email, by_external = contact_survivor(by_email), contact_survivor(by_external)
    if by_email and by_external and by_email.pk != by_external.pk:
        raise ConflictError(
            "The email and the app user id belong to two different contacts; merge them first.",
            fields={"email": [f"contact {by_email.pk}"], "external_id": [f"contact {by_external.pk}"]},
            code="identity_conflict",
        )
    return by_email or by_external


def contact_survivor(contact: Contact | None) -> Contact | None:
    """The contact itself, or, for a merged-away one, the contact it was merged into, along the
    whole chain (records sent under a stale id, such as orders and deals, belong to the person's
    live record)."""
    seen = set()
    while contact is not None and contact.merged_into_id and contact.pk not in seen:
        seen.add(contact.pk)
        contact = Contact.objects.get(pk=contact.merged_into_id)
    return contact


# ----------------------------------------------------------------------------- create/update


def contact_create(
    *,
    actor: Actor,
    email: str | None = None,
    external_id: str | None = None,
    lifecycle_stage: str = lifecycle.Stage.VISITOR,
    **fields: Any,
) -> Contact:
    """Create a contact. ValidationError for bad fields or no identity; ConflictError (409)
    naming the existing contact when the email or app user id is taken.

    A staff edit under the conflict policy (contacts/conflict.py): the groups of the fields it
    sets are stamped as written by staff now, so an event older than the creation is stale for
    them. Writers on behalf of another source go through contact_sync.

    A create without `properties` is checked as one with none: required custom fields are named."""
    return _contact_create(
        actor=actor,
        email=email,
        external_id=external_id,
        lifecycle_stage=lifecycle_stage,
        fields={"properties": {}, **fields},
        sync_source=conflict.STAFF,
        occurred_at=None,
    )


def _contact_create(
    *,
    actor: Actor,
    email: str | None,
    external_id: str | None,
    lifecycle_stage: str,
    fields: dict[str, Any],
    sync_source: str,
    occurred_at: dt.datetime | None,
) -> Contact:
    """contact_create, written as `sync_source` at `occurred_at` (None: now)."""
    email, external_id = normalize_email(email), normalize_external_id(external_id)
    if not email and not external_id:
        raise ValidationError({"email": ["Give an email or an app user id (external_id)."]})
    if lifecycle_stage not in lifecycle.Stage.values:
        raise ValidationError({"lifecycle_stage": [f"Not a lifecycle stage: {lifecycle_stage!r}."]})
    cleaned = _clean_fields(fields)
    # An erased person's email, phone or app user id does not come back (compliance's suppression list).
    suppression_check(email=email, phone=cleaned.get("phone"), external_id=external_id)
    with transaction.atomic():
        existing = contact_find(email=email, external_id=external_id)
        if existing is not None:
            raise _taken(existing, email=email, external_id=external_id)
        # The identifiers find the contact and are not weighed by the policy (contact_sync):
        # they stamp nothing, or a sign-up would make every older change to a name stale.
        stamps = conflict.stamp({}, source=sync_source, occurred_at=occurred_at or timezone.now(), fields=cleaned)
        try:
            with transaction.atomic():
                contact = Contact.objects.create(
                    email=email,
                    external_id=external_id,
                    lifecycle_stage=lifecycle_stage,
                    group_timestamps=stamps,
                    **cleaned,
                )
        except IntegrityError:  # a concurrent request created it first
            existing = contact_find(email=email, external_id=external_id)
            if existing is None:
                raise
            raise _taken(existing, email=email, external_id=external_id) from None
        if lifecycle_stage != lifecycle.Stage.VISITOR:
            # Made at a later stage (an import, a sign-up that is a lead already): its history
            # says so, so funnels and cohorts, which read the transitions, count it.
            _transition_record(
                contact, lifecycle.Stage.VISITOR, lifecycle_stage, "created at this stage", actor, occurred_at
            )
        audit_record(actor=actor, action="contact.create", obj=contact, changes=_audit_changes({}, cleaned))
        outbox_publish(topic="contact.created", obj=contact, payload=contact_payload(contact), actor=actor)
    return contact


def _taken(existing: Contact, *, email, external_id) -> ConflictError:
    field = "email" if email and existing.email == email else "external_id"
    return ConflictError(
        f"A contact with this {field.replace('_', ' ')} exists: {existing.pk}.",
        fields={field: [f"contact {existing.pk}"]},
        code="duplicate_contact",
    )


def contact_update(*, contact: Contact, actor: Actor, **fields: Any) -> Contact:
    """Change a contact's fields (and email/external_id, which stay unique: ConflictError).

    A staff edit under the conflict policy (contacts/conflict.py): it is applied whatever the
    group stamps say, and stamps the groups of the fields it changes as written by staff now,
    in the same UPDATE, so an event older than the edit is stale for them. Writers on behalf of
    another source go through contact_sync."""
    return _contact_update(contact=contact, actor=actor, fields=fields, sync_source=conflict.STAFF, occurred_at=None)


def _contact_update(
    *,
    contact: Contact,
    actor: Actor,
    fields: dict[str, Any],
    sync_source: str,
    occurred_at: dt.datetime | None,
    stamped_fields: Iterable[str] | None = None,
    row_locked: bool = False,
) -> Contact:
    """contact_update, written as `sync_source` at `occurred_at` (None: now). It stamps the
    groups of `stamped_fields`, by default the fields it changes (a staff edit). A sync names
    what the policy let it apply: a source saying a value again still moves its group's time
    on, and an identifier filled in against a newer group leaves that group's stamp alone.
    `row_locked`: `contact` is the row as the caller locked it in its open transaction
    (contact_sync), so it is not read and locked again."""
    identity = {k: fields.pop(k) for k in list(fields) if k in IDENTITY_FIELDS}
    cleaned = _clean_fields(fields, country=contact.country)
    if "email" in identity:
        cleaned["email"] = normalize_email(identity["email"])
    if "external_id" in identity:
        cleaned["external_id"] = normalize_external_id(identity["external_id"])
    with transaction.atomic():
        # NO KEY UPDATE, the lock the UPDATE itself takes (email and external_id have partial
        # unique indexes, which are not keys) and the one the inbound timeline batch takes: no
        # upgrade when both run in one transaction, and rows pointing at the contact
        # (activities, notes) can still be inserted meanwhile.
        locked = contact if row_locked else locked_row(Contact.objects.select_for_update(no_key=True), contact.pk)
        if not (cleaned.get("email", locked.email) or cleaned.get("external_id", locked.external_id)):
            raise ValidationError({"email": ["A contact keeps an email or an app user id."]})
        for field in IDENTITY_FIELDS & cleaned.keys():
            value = cleaned[field]
            if value and Contact.objects.filter(**{field: value}).exclude(pk=locked.pk).exists():
                other = Contact.objects.filter(**{field: value}).first()
                raise _taken(other, email=cleaned.get("email"), external_id=cleaned.get("external_id"))
        new = {
            f: cleaned[f]
            for f in ("email", "phone", "external_id")
            if cleaned.get(f) and cleaned[f] != getattr(locked, f)
        }
        if new:
            suppression_check(**new)
        changes = _apply(locked, cleaned)
        stamps = conflict.stamp(
            locked.group_timestamps,
            source=sync_source,
            occurred_at=occurred_at or timezone.now(),
            fields=changes if stamped_fields is None else stamped_fields,
        )
        stamped = stamps != locked.group_timestamps
        locked.group_timestamps = stamps
        if changes:
            try:
                with transaction.atomic():
                    locked.save(update_fields=[*changes, "group_timestamps", "updated_at"])
            except IntegrityError:
                raise ConflictError("The email or app user id was just taken by another contact.") from None
            audit_record(actor=actor, action="contact.update", obj=locked, changes=changes)
            outbox_publish(
                topic="contact.updated",
                obj=locked,
                payload={**contact_payload(locked), "changed": sorted(changes)},
                actor=actor,
            )
        elif stamped:  # a source said again what the contact holds: only its time moves on
            locked.save(update_fields=["group_timestamps"])
    return locked


def _apply(contact: Contact, cleaned: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    changes = {}
    for name, value in cleaned.items():
        current = getattr(contact, name)
        if current != value:
            changes[name] = (current, value)
            setattr(contact, name, value)
    return changes


def _audit_changes(before: dict, after: dict) -> dict:
    return {name: (before.get(name), value) for name, value in after.items()}


def contact_upsert(
    *,
    actor: Actor,
    email: str | None = None,
    external_id: str | None = None,
    **fields: Any,
) -> tuple[Contact, bool]:
    """Create the contact these identifiers name, or update it. Returns (contact, created).

    Safe under concurrency: the unique indexes decide, and a loser of the race updates the
    winner's row. ConflictError when email and external id name two different contacts."""
    email, external_id = normalize_email(email), normalize_external_id(external_id)
    if not email and not external_id:
        raise ValidationError({"email": ["Give an email or an app user id (external_id)."]})
    for _ in range(3):
        existing = contact_find(email=email, external_id=external_id)
        if existing is None:
            try:
                return contact_create(actor=actor, email=email, external_id=external_id, **fields), True
            except ConflictError as exc:
                if exc.code != "duplicate_contact":
                    raise
                continue  # someone created it meanwhile: update theirs
        identity = {}
        if email and not existing.email:
            identity["email"] = email
        if external_id and not existing.external_id:
            identity["external_id"] = external_id
        return contact_update(contact=existing, actor=actor, **identity, **fields), False
    raise ConflictError("The contact kept changing under this request; try again.")


def contact_sync(
    *,
    actor: Actor,
    sync_source: str,
    occurred_at: dt.datetime,
    email: str | None = None,
    external_id: str | None = None,
    **fields: Any,
) -> tuple[Contact, bool, dict[str, Any]]:
    """Upsert from a source ("app", "crm", "marketing") under the conflict policy (contacts.conflict):
    `sync_source` says who writes (`source` stays the contact's own field). Fields of a
    group the source may not overwrite, or older than what the group last saw, are stale —
    returned, not applied. Returns (contact, created, stale fields). Inbound app events and
    provider adapters write contacts through this.

    The contact's row is locked (as contact_update locks it) before its stamps are read, so
    two syncs of one contact run one after the other and the second decides on what the first
    wrote: the newer write wins whichever commits first. When both create the contact, the
    unique indexes let one do it and the other starts again on that row."""
    email, external_id = normalize_email(email), normalize_external_id(external_id)
    identity = {k: v for k, v in (("email", email), ("external_id", external_id)) if v}
    for _ in range(3):
        with transaction.atomic():
            existing = contact_find(email=email, external_id=external_id)
            if existing is None:
                try:
                    contact = _contact_create(
                        actor=actor,
                        email=email,
                        external_id=external_id,
                        lifecycle_stage=lifecycle.Stage.VISITOR,
                        fields=fields,
                        sync_source=sync_source,
                        occurred_at=occurred_at,
                    )
                except ConflictError as exc:
                    if exc.code != "duplicate_contact":
                        raise
                    continue  # created meanwhile by someone else: decide again on their row
                return contact, True, {}
            locked = locked_row(Contact.objects.select_for_update(no_key=True), existing.pk)
            if locked.merged_into_id:
                continue  # merged away while we waited for the lock: find the survivor again
            applied, stale, _ = conflict.resolve(
                stamps=locked.group_timestamps, source=sync_source, occurred_at=occurred_at, fields=fields
            )
            # Identifiers find the contact whatever the policy says (they are not weighed, and
            # stamp nothing); one it lacks is filled in.
            missing = {k: v for k, v in identity.items() if not getattr(locked, k)}
            contact = _contact_update(
                contact=locked,
                actor=actor,
                fields={**applied, **missing},
                sync_source=sync_source,
                occurred_at=occurred_at,
                stamped_fields=applied,
                row_locked=True,
            )
            return contact, False, stale
    raise ConflictError("The contact kept changing under this request; try again.")


def contact_archive(*, contact: Contact, actor: Actor, archived: bool = True) -> Contact:
    """Hide a contact from lists (reversible). Erasure is the compliance app's job."""
    with transaction.atomic():
        locked = locked_row(Contact.objects.select_for_update(no_key=True), contact.pk)
        if locked.is_archived != archived:
            locked.is_archived = archived
            locked.save(update_fields=["is_archived", "updated_at"])
            audit_record(actor=actor, action="contact.archive" if archived else "contact.unarchive", obj=locked)
            outbox_publish(
                topic="contact.archived" if archived else "contact.restored", obj=locked, payload={}, actor=actor
            )
    return locked


# What other systems hear about a contact (contact.created / contact.updated), after its id;
# the bulk and event paths build the same shape from rows (contacts.bulk, integrations).
CONTACT_PAYLOAD_FIELDS = (
    "email",
    "external_id",
    "first_name",
    "last_name",
    "phone",
    "lifecycle_stage",
    "engagement_tier",
    "lead_score",
    "is_paid",
    "onboarding_status",
    "tags",
)


def contact_payload(contact: Contact) -> dict[str, Any]:
    """What other systems hear about a contact (the PHI guard filters it per destination)."""
    return {"id": contact.pk, **{name: getattr(contact, name) for name in CONTACT_PAYLOAD_FIELDS}}


# ----------------------------------------------------------------------------- merge

_merge_handlers: list[Callable[..., None]] = []


def register_merge_handler(handler: Callable[..., None]) -> None:
    """Apps whose rows point at contacts (deals, consents, ...) move them to the survivor:
    handler(*, loser_id, survivor_id, actor) runs inside the merge's transaction."""
    if handler not in _merge_handlers:
        _merge_handlers.append(handler)


_MERGE_FILLABLE = (
    "first_name",
    "last_name",
    "phone",
    "date_of_birth",
    "address_line1",
    "address_line2",
    "city",
    "region",
    "postal_code",
    "country",
    "time_zone",
    "language",
    "company_id",
    "owner_id",
    "source",
)


# Stages a merge never moves the survivor to: a decline is the sweep's to decide, on the
# merged activity (a duplicate gone cold says nothing about the person's live record).
_MERGE_NO_MOVE_TO = frozenset({lifecycle.Stage.AT_RISK, lifecycle.Stage.CHURNED})


def _engagement_written_later(contact: Contact, other: Contact) -> bool:
    """Whether `contact`'s engagement group (churn risk...) would win over `other`'s under the
    conflict policy: written at a higher rank, or at the same rank more recently. A group no
    source ever wrote holds only defaults and loses to any that was."""
    mine, theirs = (c.group_timestamps.get("engagement") for c in (contact, other))
    if mine is None:
        return False
    return theirs is None or (mine["rank"], dt.datetime.fromisoformat(mine["at"])) > (
        theirs["rank"],
        dt.datetime.fromisoformat(theirs["at"]),
    )


def contact_merge(*, survivor: Contact, loser: Contact, actor: Actor) -> Contact:
    """Move the loser's timeline, notes, tickets, orders, subscriptions, external refs (and
    whatever other apps registered) to the survivor, fill the survivor's empty fields from the
    loser, and archive the loser with a pointer. ValidationError when merging into itself or
    with an already merged contact.

    An identifier (email, app user id) the survivor lacks moves from the loser to it, so the
    person's identifiers keep capturing and updating them. One both have stays on the loser,
    where contact_find follows the pointer to the survivor (which has one, so nothing fills it
    in). The survivor keeps the later activity dates, the churn risk the conflict policy would
    keep, and moves forward to the loser's lifecycle stage when the state machine allows it (a
    "merge" transition): the sweep then judges the whole person."""
    from django.contrib.contenttypes.models import ContentType

    from contacts.models import ExternalRef

    if survivor.pk == loser.pk:
        raise ValidationError({"loser": ["A contact cannot be merged into itself."]})
    with transaction.atomic():
        first, second = sorted([survivor.pk, loser.pk])
        locked = {c.pk: c for c in Contact.objects.select_for_update().filter(pk__in=[first, second]).order_by("pk")}
        gone = [pk for pk in (survivor.pk, loser.pk) if pk not in locked]
        if gone:  # erased by a request that held the row first (a KeyError was a 500)
            raise Http404(f"No contact {gone[0]}.")
        survivor, loser = locked[survivor.pk], locked[loser.pk]
        if loser.merged_into_id or survivor.merged_into_id:
            raise ValidationError({"loser": ["One of these contacts was already merged."]})
        moved = {}
        # A ticket the app sent under each of the person's two records (one ticket id, unique
        # per contact): the loser's copy moves without the id, the survivor's keeps it.
        survivors_ids = Ticket.objects.filter(contact_id=survivor.pk, external_id__isnull=False).values("external_id")
        Ticket.objects.filter(contact_id=loser.pk, external_id__in=survivors_ids).update(external_id=None)
        for model in (Activity, Note, Ticket, Order, Subscription, LifecycleTransition):
            moved[model._meta.model_name] = model.objects.filter(contact_id=loser.pk).update(contact_id=survivor.pk)
        contact_type = ContentType.objects.get_for_model(Contact)
        refs = ExternalRef.objects.filter(content_type=contact_type, object_id=loser.pk)
        clashing = ExternalRef.objects.filter(content_type=contact_type, object_id=survivor.pk).values("provider")
        moved["externalref"] = refs.exclude(provider__in=clashing).update(object_id=survivor.pk)
        for handler in _merge_handlers:
            handler(loser_id=loser.pk, survivor_id=survivor.pk, actor=actor)
        filled = [f for f in _MERGE_FILLABLE if not getattr(survivor, f) and getattr(loser, f)]
        for field in filled:
            setattr(survivor, field, getattr(loser, field))
        identifiers = [f for f in ("email", "external_id") if not getattr(survivor, f) and getattr(loser, f)]
        for field in identifiers:
            setattr(survivor, field, getattr(loser, field))
            setattr(loser, field, None)
        survivor.tags = sorted(set(survivor.tags) | set(loser.tags))
        survivor.properties = {**loser.properties, **survivor.properties}
        survivor.is_paid = survivor.is_paid or loser.is_paid
        for field in ("last_active_at", "last_login_at"):
            setattr(survivor, field, max(filter(None, (getattr(survivor, field), getattr(loser, field))), default=None))
        if _engagement_written_later(loser, survivor):
            survivor.churn_risk = loser.churn_risk
            # The group now holds the loser's later writes (activity dates, churn risk): its stamp
            # goes with them, or an event older than those writes would be applied over them.
            survivor.group_timestamps = {
                **survivor.group_timestamps,
                "engagement": loser.group_timestamps["engagement"],
            }
        # The loser gives up its identifiers before the survivor takes them (the unique indexes
        # check each statement); a merged-away row may hold none (contact_has_identity).
        loser.is_archived = True
        loser.merged_into = survivor
        loser.save(update_fields=["is_archived", "merged_into", *identifiers, "updated_at"])
        survivor.save()
        if lifecycle.is_allowed(survivor.lifecycle_stage, loser.lifecycle_stage) and (
            loser.lifecycle_stage not in _MERGE_NO_MOVE_TO
        ):
            survivor = lifecycle_transition(
                contact=survivor, to_stage=loser.lifecycle_stage, reason="merge", actor=actor
            )
        audit_record(
            actor=actor,
            action="contact.merge",
            obj=survivor,
            changes={
                "loser": loser.pk,
                "filled": sorted(f.removesuffix("_id") for f in filled),
                "identifiers": identifiers,
                **moved,
            },
        )
        audit_record(actor=actor, action="contact.merged_away", obj=loser, changes={"survivor": survivor.pk})
        outbox_publish(
            topic="contact.merged", obj=survivor, payload={"survivor": survivor.pk, "loser": loser.pk}, actor=actor
        )
    return survivor


def contact_duplicate_dismiss(*, first_id: int, second_id: int, actor: Actor) -> None:
    """Staff say two contacts are different people: the duplicate review stops listing them."""
    from contacts.models import ContactDuplicateDismissal

    first_id, second_id = sorted((first_id, second_id))
    if first_id == second_id or Contact.objects.filter(pk__in=[first_id, second_id]).count() != 2:
        raise ValidationError({"dismiss": ["Two existing contacts."]})
    with transaction.atomic():
        _, created = ContactDuplicateDismissal.objects.get_or_create(first_id=first_id, second_id=second_id)
        if created:
            audit_record(
                actor=actor,
                action="contact.duplicate_dismissed",
                object_type="contacts.contact",
                object_id=first_id,
                changes={"other": second_id},
            )


# ----------------------------------------------------------------------------- lifecycle


def _transition_record(
    contact: Contact, from_stage: str, to_stage: str, reason: str, actor: Actor, occurred_at: dt.datetime | None
) -> LifecycleTransition:
    """The history row of a lifecycle move (made by lifecycle_transition, or at creation)."""
    return LifecycleTransition.objects.create(
        contact=contact,
        from_stage=from_stage,
        to_stage=to_stage,
        reason=reason[:200],
        actor_kind=actor.kind,
        actor_id=str(actor.id)[:64],
        occurred_at=occurred_at or timezone.now(),
    )


def lifecycle_transition(
    *,
    contact: Contact,
    to_stage: str,
    reason: str,
    actor: Actor,
    occurred_at: dt.datetime | None = None,
) -> Contact:
    """Move a contact along the state machine and record it. A move to the current stage does
    nothing; a move the table does not allow raises ValidationError naming both stages."""
    if to_stage not in lifecycle.Stage.values:
        raise ValidationError({"lifecycle_stage": [f"Not a lifecycle stage: {to_stage!r}."]})
    with transaction.atomic():
        locked = locked_row(Contact.objects.select_for_update(no_key=True), contact.pk)
        if locked.lifecycle_stage == to_stage:
            return locked
        if not lifecycle.is_allowed(locked.lifecycle_stage, to_stage):
            raise ValidationError(
                {
                    "lifecycle_stage": [
                        f"A contact cannot move from {lifecycle.Stage(locked.lifecycle_stage).label} "
                        f"to {lifecycle.Stage(to_stage).label}."
                    ]
                }
            )
        from_stage = locked.lifecycle_stage
        locked.lifecycle_stage = to_stage
        locked.save(update_fields=["lifecycle_stage", "updated_at"])
        _transition_record(locked, from_stage, to_stage, reason, actor, occurred_at)
        audit_record(
            actor=actor,
            action="contact.lifecycle",
            obj=locked,
            # Whether a reason was given, not its text: staff type it freely (it may name a
            # person or their health), it is kept on the transition, which erasure blanks, and
            # audit rows are kept for ever.
            changes={"lifecycle_stage": (from_stage, to_stage), "reason_given": bool(reason)},
        )
        outbox_publish(
            topic="contact.lifecycle_changed",
            obj=locked,
            payload={"id": locked.pk, "from": from_stage, "to": to_stage, "reason": reason[:200]},
            actor=actor,
        )
    return locked


def lifecycle_apply_event(*, contact: Contact, event_type: str, actor: Actor, occurred_at=None) -> Contact:
    """Apply the enabled lifecycle rules for an event: move to the rule's stage when the state
    machine allows it from where the contact stands; otherwise leave the stage as it is."""
    targets = list(
        LifecycleRule.objects.filter(enabled=True, event_type__in=[event_type, "any_activity"]).values_list(
            "to_stage", flat=True
        )
    )
    if not targets:
        return contact
    # Most events move nobody ("any_activity" matches them all): decide on the stored stage
    # without a row lock, and lock (in lifecycle_transition) only for a move that may happen.
    stage = Contact.objects.filter(pk=contact.pk).values_list("lifecycle_stage", flat=True).get()
    for to_stage in targets:
        if not lifecycle.is_allowed(stage, to_stage):
            continue
        try:
            with transaction.atomic():
                contact = lifecycle_transition(
                    contact=contact,
                    to_stage=to_stage,
                    reason=f"event {event_type}",
                    actor=actor,
                    occurred_at=occurred_at,
                )
        except ValidationError:
            continue  # the stage changed since we read it and the move is no longer allowed: leave it
        stage = contact.lifecycle_stage
    return contact


def lifecycle_sweep(*, actor: Actor, now: dt.datetime | None = None, batch: int = 1000) -> dict[str, int]:
    """The thresholds' moves (LifecycleSettings): engaged contacts whose churn risk is above
    the threshold become At-Risk; contacts inactive for longer than the threshold become
    Churned, unless they still pay (an active subscription, or an order paid within the
    threshold). Each move is a normal transition (history, audit, outbox); safe to run again."""
    from contacts.models import LifecycleSettings

    now = now or timezone.now()
    thresholds = LifecycleSettings.objects.get_or_create(id=1)[0]
    can_be_at_risk = [s for s, targets in lifecycle.ALLOWED.items() if lifecycle.Stage.AT_RISK in targets]
    can_churn = [s for s, targets in lifecycle.ALLOWED.items() if lifecycle.Stage.CHURNED in targets]
    inactive_since = now - dt.timedelta(days=thresholds.churned_after_days)
    # A paying customer has not churned, however long since they opened the app: an active
    # subscription, or an order paid within the inactivity window, keeps them where they are.
    paying = Exists(Subscription.objects.filter(contact_id=OuterRef("pk"), status=Subscription.Status.ACTIVE)) | Exists(
        Order.objects.filter(contact_id=OuterRef("pk"), status=Order.Status.PAID, paid_at__gte=inactive_since)
    )
    moves = {
        lifecycle.Stage.CHURNED: Contact.objects.filter(lifecycle_stage__in=can_churn, is_archived=False)
        .filter(Q(last_active_at__lt=inactive_since) | Q(last_active_at__isnull=True, created_at__lt=inactive_since))
        .exclude(paying),
        lifecycle.Stage.AT_RISK: Contact.objects.filter(
            lifecycle_stage__in=can_be_at_risk, is_archived=False, churn_risk__gt=thresholds.at_risk_churn_risk
        ),
    }
    moved = {}
    for to_stage, candidates in moves.items():
        count = 0
        ids = list(candidates.order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(ids), batch):
            for contact in Contact.objects.filter(pk__in=ids[start : start + batch]):
                if not lifecycle.is_allowed(contact.lifecycle_stage, to_stage):
                    continue
                with transaction.atomic():
                    # Judged again under the row lock: a contact erased, merged away, archived or
                    # active again since the candidates were read is left alone.
                    locked = candidates.select_for_update(no_key=True).filter(pk=contact.pk).first()
                    if locked is None or not lifecycle.is_allowed(locked.lifecycle_stage, to_stage):
                        continue
                    lifecycle_transition(contact=locked, to_stage=to_stage, reason="threshold", actor=actor)
                count += 1
        moved[to_stage.value] = count
    return moved


# ----------------------------------------------------------------------------- timeline


def activity_record(
    *,
    contact: Contact,
    type: str,
    actor: Actor,
    occurred_at: dt.datetime | None = None,
    source: str = "",
    properties: dict | None = None,
    apply_lifecycle: bool = True,
) -> Activity:
    """Append to the timeline; mark the contact active; apply the lifecycle rules for `type`."""
    if not type or len(type) > 64:
        raise ValidationError({"type": ["An activity type of 1 to 64 characters."]})
    occurred_at = occurred_at or timezone.now()
    with transaction.atomic():
        row_held(Contact, contact.pk)
        activity = Activity.objects.create(
            contact=contact, type=type, occurred_at=occurred_at, source=source[:50], properties=properties or {}
        )
        Contact.objects.filter(pk=contact.pk).filter(
            Q(last_active_at__isnull=True) | Q(last_active_at__lt=occurred_at)
        ).update(last_active_at=occurred_at)
        audit_record(actor=actor, action="activity.create", obj=activity, changes={"type": type})
        if apply_lifecycle:
            lifecycle_apply_event(contact=contact, event_type=type, actor=actor, occurred_at=occurred_at)
    return activity


def note_create(*, contact: Contact, body: str, actor: Actor, author=None) -> Note:
    if not body or not body.strip():
        raise ValidationError({"body": ["A note needs text."]})
    contact = contact_survivor(contact)  # as for orders: a note sent under a merged-away contact's id
    with transaction.atomic():
        row_held(Contact, contact.pk)
        note = Note.objects.create(contact=contact, body=body, author=author)
        audit_record(actor=actor, action="note.create", obj=note, changes={"contact": contact.pk})
    return note


TICKET_SLA_HOURS = {"urgent": 4, "high": 24, "normal": 72, "low": 168}


TICKET_DIFFERS = "ticket_differs"  # ConflictError code: the contact's ticket id again, with other content


def ticket_create(
    *,
    contact: Contact,
    subject: str,
    actor: Actor,
    body: str = "",
    priority: str = "normal",
    owner=None,
    external_id: str | None = None,
) -> Ticket:
    """Open a ticket; its SLA due time follows from its priority. Idempotent on the contact's
    `external_id` (the app's id for it): the contact's ticket with that id, as it is, when
    there is one; ConflictError (code TICKET_DIFFERS) when it has another subject or body (the
    priority is not compared: staff triage changes it after the fact)."""
    if priority not in Ticket.Priority.values:
        raise ValidationError({"priority": [f"One of {', '.join(Ticket.Priority.values)}."]})
    if not subject or not subject.strip():
        raise ValidationError({"subject": ["A ticket needs a subject."]})
    contact = contact_survivor(contact)  # as for orders: a ticket sent under a merged-away contact's id
    sent = {"subject": subject.strip()[:200], "body": body}

    def again(existing: Ticket) -> Ticket:
        _refuse_other_values("Ticket", existing, sent, TICKET_DIFFERS)
        return existing

    with transaction.atomic():
        row_held(Contact, contact.pk)
        if external_id:
            existing = Ticket.objects.filter(contact=contact, external_id=external_id).first()
            if existing is not None:
                return again(existing)
        try:
            with transaction.atomic():
                ticket = Ticket.objects.create(
                    contact=contact,
                    subject=sent["subject"],
                    body=body,
                    priority=priority,
                    owner=owner,
                    sla_due_at=timezone.now() + dt.timedelta(hours=TICKET_SLA_HOURS[priority]),
                    external_id=external_id or None,
                )
        except IntegrityError:  # the same ticket, opened by a concurrent request
            if not external_id:
                raise
            return again(Ticket.objects.get(contact=contact, external_id=external_id))
        audit_record(actor=actor, action="ticket.create", obj=ticket, changes={"priority": priority})
        outbox_publish(
            topic="ticket.created",
            obj=ticket,
            payload={"id": ticket.pk, "contact": contact.pk, "priority": priority},
            actor=actor,
        )
    return ticket


def ticket_update(*, ticket: Ticket, actor: Actor, **fields: Any) -> Ticket:
    allowed = {"status", "priority", "owner", "subject", "body"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationError({name: ["Unknown or read-only field."] for name in unknown})
    if "status" in fields and fields["status"] not in Ticket.Status.values:
        raise ValidationError({"status": [f"One of {', '.join(Ticket.Status.values)}."]})
    if "priority" in fields and fields["priority"] not in Ticket.Priority.values:
        raise ValidationError({"priority": [f"One of {', '.join(Ticket.Priority.values)}."]})
    with transaction.atomic():
        locked = locked_row(Ticket.objects.select_for_update(), ticket.pk)
        changes = _apply(locked, fields)
        if changes:
            locked.save()
            audit_record(actor=actor, action="ticket.update", obj=locked, changes=changes)
    return locked


# ----------------------------------------------------------------------------- commerce


def is_currency_code(value: Any) -> bool:
    """Three ASCII letters, in either case (isalpha() alone also takes "ÄÖÜ", no ISO 4217 code)."""
    return isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha()


def order_record(
    *,
    contact: Contact,
    amount: Decimal,
    actor: Actor,
    currency: str = "USD",
    status: str = Order.Status.PAID,
    paid_at: dt.datetime | None = None,
    items: list | None = None,
    external_id: str | None = None,
) -> tuple[Order, bool]:
    """Record an order (idempotent on external_id). A paid order marks the contact paid and
    applies the lifecycle rules: `order_placed`, and `recurring_order` from the second on."""
    amount = Decimal(str(amount))
    if amount < 0:
        raise ValidationError({"amount": ["An amount cannot be negative."]})
    if status not in Order.Status.values:
        raise ValidationError({"status": [f"One of {', '.join(Order.Status.values)}."]})
    if not is_currency_code(currency):
        raise ValidationError({"currency": ["A three-letter ISO 4217 code."]})
    contact = contact_survivor(contact)  # an order sent under a merged-away contact's id is the survivor's
    again = functools.partial(
        _order_again, contact=contact, amount=amount, currency=currency.upper(), status=status, actor=actor
    )
    with transaction.atomic():
        row_held(Contact, contact.pk)
        if external_id:
            existing = Order.objects.select_for_update().filter(external_id=external_id).first()
            if existing is not None:
                return again(existing), False
        try:
            with transaction.atomic():
                order = Order.objects.create(
                    contact=contact,
                    amount=amount,
                    currency=currency.upper(),
                    status=status,
                    paid_at=paid_at or (timezone.now() if status == Order.Status.PAID else None),
                    items=items or [],
                    external_id=external_id or None,
                )
        except IntegrityError:  # the same order id, recorded by a concurrent request (for another contact?)
            return again(Order.objects.select_for_update().get(external_id=external_id)), False
        audit_record(actor=actor, action="order.create", obj=order, changes={"amount": str(amount), "status": status})
        outbox_publish(
            topic="order.created",
            obj=order,
            payload={"id": order.pk, "contact": contact.pk, "amount": str(amount), "currency": order.currency},
            actor=actor,
        )
        if status == Order.Status.PAID:
            Contact.objects.filter(pk=contact.pk, is_paid=False).update(is_paid=True)
            contact.refresh_from_db(fields=["lifecycle_stage", "is_paid"])
            # Moves dated when the order was paid (an event sent later), as the timeline's are.
            moved_at = order.paid_at
            contact = lifecycle_apply_event(
                contact=contact, event_type="order_placed", actor=actor, occurred_at=moved_at
            )
            if Order.objects.filter(contact=contact, status=Order.Status.PAID).count() >= 2:
                lifecycle_apply_event(contact=contact, event_type="recurring_order", actor=actor, occurred_at=moved_at)
    return order, True


# What an order recorded again under its external id may become (a refund, a cancellation).
_ORDER_MOVES = {Order.Status.PAID: {Order.Status.REFUNDED, Order.Status.CANCELLED}}


ORDER_DIFFERS = "order_differs"  # ConflictError code: the order id again, with another amount or currency


def _refuse_other_values(noun: str, recorded: Any, sent: dict[str, Any], code: str) -> None:
    """ConflictError `code`, naming each field, when an object sent again under its external id
    carries values other than the ones recorded (`sent`: field -> value as the row keeps it):
    a correction or the sender's bug is not the object we have. The caller holds the lock."""
    label = f"{noun} {recorded.external_id}"
    differs = {
        name: [f"{label} was recorded with {name} {getattr(recorded, name)}."]
        for name, value in sent.items()
        if getattr(recorded, name) != value
    }
    if differs:
        raise ConflictError(f"{label} was recorded with another {' and '.join(differs)}.", fields=differs, code=code)


def _order_again(order: Order, *, contact: Contact, amount: Decimal, currency: str, status: str, actor: Actor) -> Order:
    """An order recorded again under its external id (the row locked): the same order, as it
    is; or its refund or cancellation, applied. A paid order that went back to the contact's
    totals leaves them (lifetime value counts paid orders only). ConflictError for another
    contact's order, for another amount or currency (code ORDER_DIFFERS: a correction, or the
    sender's bug, is not the order we have; compared under the lock, so two requests racing
    cannot both pass), or a move no order makes (refunded back to paid)."""
    if order.contact_id != contact.pk:
        raise ConflictError(f"Order {order.external_id} belongs to another contact.", code="order_conflict")
    _refuse_other_values("Order", order, {"amount": amount, "currency": currency}, ORDER_DIFFERS)
    if status == order.status:
        return order
    if status not in _ORDER_MOVES.get(order.status, ()):
        raise ConflictError(
            f"Order {order.external_id} is {order.status}; it cannot become {status}.", code="order_conflict"
        )
    previous, order.status = order.status, status
    order.save(update_fields=["status"])
    audit_record(actor=actor, action="order.status", obj=order, changes={"status": (previous, status)})
    outbox_publish(
        topic="order.updated",
        obj=order,
        payload={"id": order.pk, "contact": contact.pk, "status": status, "previous": previous},
        actor=actor,
    )
    return order


SUBSCRIPTION_DIFFERS = "subscription_differs"  # ConflictError code: its id again, with other values


def subscription_start(
    *,
    contact: Contact,
    plan: str,
    actor: Actor,
    amount: Decimal = Decimal("0"),
    currency: str = "USD",
    started_at: dt.datetime | None = None,
    renews_at: dt.datetime | None = None,
    external_id: str | None = None,
) -> tuple[Subscription, bool]:
    """Start a subscription (idempotent on external_id) and apply `subscription_started`.
    ConflictError for another contact's subscription id, or (code SUBSCRIPTION_DIFFERS) for
    one recorded with another plan, amount or currency."""
    if not plan or not str(plan).strip():
        raise ValidationError({"plan": ["A subscription needs a plan."]})
    if not is_currency_code(currency):
        raise ValidationError({"currency": ["A three-letter ISO 4217 code."]})
    contact = contact_survivor(contact)  # as for orders: a merged-away contact's subscription is the survivor's
    started_at = started_at or timezone.now()
    try:
        renews_at = renews_at or started_at + dt.timedelta(days=30)
    except OverflowError:  # a start in the last month of year 9999
        raise ValidationError({"started_at": ["Too late for a renewal 30 days after it; give renews_at."]}) from None
    again = functools.partial(
        _subscription_again,
        contact=contact,
        plan=plan,
        amount=amount,
        currency=currency,
        started_at=started_at,
        renews_at=renews_at,
        actor=actor,
    )
    with transaction.atomic():
        row_held(Contact, contact.pk)
        if external_id:
            existing = Subscription.objects.filter(external_id=external_id).first()
            if existing is not None:
                return again(existing), False
        try:
            with transaction.atomic():
                subscription = Subscription.objects.create(
                    contact=contact,
                    plan=str(plan).strip()[:100],
                    amount=Decimal(str(amount)),
                    currency=currency.upper(),
                    started_at=started_at,
                    renews_at=renews_at,
                    external_id=external_id or None,
                )
        except IntegrityError:  # the same subscription id, recorded by a concurrent request
            return again(Subscription.objects.get(external_id=external_id)), False
        audit_record(actor=actor, action="subscription.start", obj=subscription, changes={"plan": subscription.plan})
        outbox_publish(
            topic="subscription.started",
            obj=subscription,
            payload={"id": subscription.pk, "contact": contact.pk, "plan": subscription.plan},
            actor=actor,
        )
        contact.refresh_from_db(fields=["lifecycle_stage"])
        lifecycle_apply_event(contact=contact, event_type="subscription_started", actor=actor, occurred_at=started_at)
    return subscription, True


def _subscription_again(
    existing: Subscription, *, contact: Contact, plan: str, amount, currency: str, started_at, renews_at, actor: Actor
) -> Subscription:
    """A subscription started again under its external id (the contact locked): ConflictError
    when it is another contact's; one its cancellation recorded first is filled in (still
    cancelled); then, as for orders, another plan, amount or currency is not the subscription
    we have (ConflictError, code SUBSCRIPTION_DIFFERS)."""
    external_id = existing.external_id
    if existing.contact_id != contact.pk:
        raise ConflictError(f"Subscription {external_id} belongs to another contact.", code="subscription_conflict")
    sent = {"plan": str(plan).strip()[:100], "amount": Decimal(str(amount)), "currency": currency.upper()}
    if subscription_awaits_start(existing):  # its cancellation came first: filled in, still cancelled
        existing.plan, existing.amount, existing.currency = sent["plan"], sent["amount"], sent["currency"]
        existing.started_at = min(started_at, existing.cancelled_at or started_at)
        existing.renews_at = renews_at  # as any started one has: its start is now heard
        existing.save(update_fields=["plan", "amount", "currency", "started_at", "renews_at"])
        audit_record(actor=actor, action="subscription.start", obj=existing, changes={"plan": existing.plan})
    # As for orders: the same id started again with another plan, amount or currency is not
    # the subscription we have (compared under the contact's lock).
    _refuse_other_values("Subscription", existing, sent, SUBSCRIPTION_DIFFERS)
    return existing


# The plan of a subscription whose cancellation arrived before its start (events out of order).
PLAN_NOT_YET_KNOWN = "(not yet known)"


def subscription_awaits_start(subscription: Subscription) -> bool:
    """Whether the subscription was recorded by its cancellation, its start not heard yet (events
    out of order), so the start fills in its plan, amount and start. Only such a row has no
    renews_at: subscription_start always sets one (the plan alone does not tell: the
    cancellation may have named it)."""
    return subscription.status == Subscription.Status.CANCELLED and subscription.renews_at is None


def subscription_cancel_by_external_id(
    *, contact: Contact, external_id: str, actor: Actor, at: dt.datetime | None = None, plan: str | None = None
) -> Subscription:
    """Cancel the contact's subscription with this external id. One the CRM has not heard start
    (events out of order) is recorded as a cancelled subscription, so the start arriving later
    (subscription_start, on the same external id) fills in its plan and leaves it cancelled
    instead of active. ConflictError (code "subscription_conflict") when the id is another
    contact's."""
    at = at or timezone.now()
    contact = contact_survivor(contact)
    with transaction.atomic():
        row_held(Contact, contact.pk)
        subscription = Subscription.objects.filter(external_id=external_id).first()
        if subscription is None:
            subscription = Subscription.objects.create(
                contact=contact,
                plan=str(plan).strip()[:100] if plan and str(plan).strip() else PLAN_NOT_YET_KNOWN,
                status=Subscription.Status.ACTIVE,
                started_at=at,
                external_id=external_id,
            )
        elif subscription.contact_id != contact.pk:
            raise ConflictError(f"Subscription {external_id} belongs to another contact.", code="subscription_conflict")
        return subscription_cancel(subscription=subscription, actor=actor, at=at)


def subscription_cancel(*, subscription: Subscription, actor: Actor, at: dt.datetime | None = None) -> Subscription:
    with transaction.atomic():
        locked = locked_row(Subscription.objects.select_for_update(), subscription.pk)
        if locked.status != Subscription.Status.CANCELLED:
            locked.status = Subscription.Status.CANCELLED
            locked.cancelled_at = at or timezone.now()
            locked.save(update_fields=["status", "cancelled_at"])
            audit_record(actor=actor, action="subscription.cancel", obj=locked)
            outbox_publish(
                topic="subscription.cancelled",
                obj=locked,
                payload={"id": locked.pk, "contact": locked.contact_id, "plan": locked.plan},
                actor=actor,
            )
    return locked


def _company_clean(fields: dict[str, Any]) -> dict[str, Any]:
    """The checks the Company model declares (lengths, ranges: a size the integer column
    holds) on the given fields, converted as the model converts them; ValidationError names
    every bad field. Uniqueness is the caller's."""
    cleaned, errors = {}, {}
    for name, value in fields.items():
        try:
            cleaned[name] = Company._meta.get_field(name).clean(value, None)
        except ValidationError as exc:
            errors[name] = exc.messages
    if errors:
        raise ValidationError(errors)
    return cleaned


def company_upsert(*, name: str, actor: Actor, domain: str | None = None, **fields: Any) -> tuple[Company, bool]:
    """A company by domain (lower-cased), created when missing. Raises ValidationError for a
    missing name or a field the model refuses."""
    domain = domain.strip().lower() if domain else None
    if not name or not name.strip():
        raise ValidationError({"name": ["A company needs a name."]})
    fields = _company_clean({"name": name.strip(), "domain": domain, **fields})
    domain = fields.pop("domain")
    with transaction.atomic():
        if domain:
            company, created = Company.objects.get_or_create(domain=domain, defaults=fields)
        else:
            company, created = Company.objects.create(**fields), True
        if created:
            audit_record(actor=actor, action="company.create", obj=company)
    return company, created


def company_update(*, company: Company, actor: Actor, **fields: Any) -> Company:
    """Change a company's name, domain (unique, lower-cased), industry or size."""
    allowed = {"name", "domain", "industry", "size"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationError({name: ["Unknown or read-only field."] for name in sorted(unknown)})
    if "domain" in fields:
        fields["domain"] = fields["domain"].strip().lower() if fields["domain"] else None
    if "name" in fields and not str(fields["name"]).strip():
        raise ValidationError({"name": ["A company needs a name."]})
    fields = _company_clean(fields)
    with transaction.atomic():
        locked = locked_row(Company.objects.select_for_update(), company.pk)
        domain = fields.get("domain")
        if domain and Company.objects.filter(domain=domain).exclude(pk=locked.pk).exists():
            other = Company.objects.get(domain=domain)
            raise ConflictError(
                f"Company {other.pk} has this domain.",
                fields={"domain": [f"company {other.pk}"]},
                code="duplicate_company",
            )
        changes = _apply(locked, fields)
        if changes:
            locked.save()
            audit_record(actor=actor, action="company.update", obj=locked, changes=changes)
    return locked


def contacts_set_scores(*, rows: Iterable[tuple[int, int, list]], actor: Actor) -> int:
    """Set lead scores and their explanations for many contacts, one statement per batch (the
    scoring job's write path). Returns how many contacts changed."""
    return _bulk_set(
        rows=[(cid, score, _json(explanation)) for cid, score, explanation in rows],
        assignments="lead_score = v.a, score_explanation = v.b::jsonb",
        columns="%s::bigint[], %s::smallint[], %s::text[]",
        names="v(id, a, b)",
        changed="c.lead_score IS DISTINCT FROM v.a OR c.score_explanation IS DISTINCT FROM v.b::jsonb",
        action="contact.scores",
        actor=actor,
    )


def contacts_set_clv(*, rows: Iterable[tuple[int, Decimal]], actor: Actor) -> int:
    """Set customer lifetime values for many contacts, one statement per batch (the nightly
    CLV job's write path). Returns how many contacts changed."""
    return _bulk_set(
        rows=[(cid, Decimal(value).quantize(Decimal("0.01"))) for cid, value in rows],
        assignments="clv = v.a",
        columns="%s::bigint[], %s::numeric[]",
        names="v(id, a)",
        changed="c.clv IS DISTINCT FROM v.a",
        action="contact.clv",
        actor=actor,
    )


_BULK_BATCH = 5000


def _bulk_set(*, rows, assignments, columns, names, changed, action, actor) -> int:
    from django.db import connection

    rows = list(rows)
    total = 0
    sql = (
        f"UPDATE contacts_contact AS c SET {assignments} "  # noqa: S608 - fragments are literals above
        f"FROM unnest({columns}) AS {names} WHERE c.id = v.id AND ({changed})"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(rows), _BULK_BATCH):
            batch = rows[start : start + _BULK_BATCH]
            cursor.execute(sql, [list(column) for column in zip(*batch, strict=True)])
            total += cursor.rowcount
        audit_record(actor=actor, action=action, object_type="contacts.contact", changes={"count": total})
    return total


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"))
