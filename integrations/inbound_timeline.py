"""The timeline path of inbound events: many events in a handful of statements.

Most events only land on the timeline and touch their contact (last active, and for logins
and onboarding one engagement field under the conflict policy). One event at a time that is a
dozen queries; here a batch of any size is, in the caller's transaction:

1. one SELECT of every named contact, then each held FOR KEY SHARE in id order (a merge or an
   erasure waits for the batch); those whose fields move locked again in id order (FOR NO KEY
   UPDATE: activities can still reference them; two batches lock in the same order, so they
   wait, never deadlock);
2. new users (types that may create them) in one contacts_bulk_upsert;
3. one UPDATE ... FROM unnest for the contacts' fields, group stamps and last activity, with
   one audit INSERT and one outbox INSERT for the contacts whose fields changed;
4. one INSERT ... SELECT FROM unnest of the activities, and one audit INSERT for them;
5. the lifecycle rules read once and applied in memory; only a move that may happen goes
   through contacts.services.lifecycle_transition (row lock, history, audit, outbox).

The rare cases take the one-at-a-time services: a merged-away contact (contact_find follows
the merge), an identifier to fill in (contact_sync, as the event's source and time:
uniqueness, suppression list, the conflict policy), a move.
Everything an event is refused for (unknown user, two contacts named) is known before any
write, so a refused event writes nothing and does not stop the others.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL
from django.utils import timezone

from compliance.services import audit_record_many
from contacts import conflict, lifecycle
from contacts import services as contacts
from contacts.bulk import contacts_bulk_upsert
from contacts.models import Activity, Contact, LifecycleRule
from crm_platform.actor import Actor
from crm_platform.api.fastjson import django_dumps
from crm_platform.errors import ConflictError
from crm_platform.outbox import outbox_publish_many

UNKNOWN_USER = "Unknown user: this event type needs a user the CRM already knows."
# last_active_at moves forward when an event is at least this much newer. A touch rewrites the
# contact row in its table and in all its ~18 indexes (last_active_at is indexed, so it is never
# a HOT update), about twenty random pages each written whole to the WAL after a checkpoint;
# an active user sends many events in a session, and what reads last_active_at (churn, tiers,
# the inactive sweep) counts in days.
TOUCH_EVERY = dt.timedelta(minutes=5)
# What contact.updated carries (contacts.services.contact_payload), and the fields an event on
# this path may write (the engagement group: the app's own, see contacts/conflict.py).
PAYLOAD_FIELDS = contacts.CONTACT_PAYLOAD_FIELDS
WRITABLE_FIELDS = frozenset(conflict.FIELD_GROUPS["engagement"])
_READ = ("id", "merged_into_id", "group_timestamps", *PAYLOAD_FIELDS, *sorted(WRITABLE_FIELDS - set(PAYLOAD_FIELDS)))
# What the first lookup reads of every named contact: enough to find it, touch it and apply the
# lifecycle rules. Contacts whose fields events write are read whole (_READ) when locked.
_LOOKUP = ("id", "merged_into_id", "email", "external_id", "lifecycle_stage", "last_active_at")


@dataclass
class Outcome:
    """One event's fate: accepted with its result, or rejected with the error (400 or 409)."""

    status: str
    result: dict[str, Any] | None = None
    error: ValidationError | ConflictError | None = None

    @classmethod
    def accepted(cls, result: dict[str, Any]) -> Outcome:
        return cls("accepted", result=result)

    @classmethod
    def rejected(cls, error: ValidationError | ConflictError) -> Outcome:
        return cls("rejected", error=error)


@dataclass(eq=False)
class _Person:
    """A contact as this batch sees it: read once, changed in memory, written once."""

    id: int | None
    values: dict[str, Any]
    stamps: dict[str, Any]
    new: bool = False
    original: dict[str, Any] = field(default_factory=dict)
    stamped: bool = False
    last_active: dt.datetime | None = None
    failed: ValidationError | ConflictError | None = None

    @property
    def stage(self) -> str:
        return self.values["lifecycle_stage"]


@dataclass
class _Row:
    """A planned activity."""

    index: int
    person: _Person
    type: str
    occurred_at: dt.datetime
    source: str
    properties: dict[str, Any]
    stale: list[str]
    moves: list[str] = field(default_factory=list)


class TimelineBatch:
    """Consecutive events of one request on the timeline path."""

    def __init__(
        self,
        *,
        events: list,
        actor: Actor,
        contact_fields: Callable,
        creates_user: Callable,
        announcement: Callable | None = None,
        user_acted: Callable | None = None,
    ):
        self.events = events
        self.actor = actor
        self.contact_fields = contact_fields  # event -> fields (None: timeline only)
        self.creates_user = creates_user  # event -> bool
        # event -> whether the user did it (default: yes). A reminder the platform schedules
        # (a refill due) is not: it neither marks the contact active nor, through the
        # "any_activity" rule, wins back a churned one.
        self.user_acted = user_acted or (lambda event: True)
        # (event, contact {"id", "email", "external_id"}, activity id) -> (outbox topic, payload),
        # or None: what other systems hear of the event (one outbox INSERT per topic).
        self.announcement = announcement
        self.by_email: dict[str, _Person] = {}
        self.by_external: dict[str, _Person] = {}
        self.merged: dict[int, int] = {}  # merged-away contact id -> its id (rows read)
        self.gone: set[tuple[str, str]] = set()  # identifiers of contacts erased as the batch began
        self._lookup()

    # -- reading ------------------------------------------------------------------------------

    def _lookup(self) -> None:
        emails = sorted({e.user["email"] for e in self.events if e.user.get("email")})
        externals = sorted({e.user["external_id"] for e in self.events if e.user.get("external_id")})
        if not emails and not externals:
            return
        # One statement, both unique indexes (BitmapOr). No lock: a touch is one conditional
        # UPDATE; contacts whose fields an event writes are locked and read again (_lock).
        named = RawSQL(
            "(email = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb))) "
            "OR external_id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb))))",
            [json.dumps(emails), json.dumps(externals)],
            output_field=BooleanField(),
        )  # the identifiers travel as two JSON arrays: a thousand IN parameters cost more in Python
        rows = list(Contact.objects.filter(named).values(*_LOOKUP))
        if rows:
            # Held (FOR KEY SHARE, in id order) until the batch commits, and whether each is
            # merged away read again under the lock: a merge or an erasure (FOR UPDATE) that
            # held one first has committed by now, and one that comes later waits for the
            # batch, so no activity lands on a merged-away contact and no foreign key fails
            # at COMMIT. Writes to the rows themselves (NO KEY UPDATE) are not held back.
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT id, merged_into_id FROM {Contact._meta.db_table} WHERE id = ANY(%s) "  # noqa: S608
                    "ORDER BY id FOR KEY SHARE",
                    [sorted(row["id"] for row in rows)],
                )
                held = dict(cursor.fetchall())
        for row in rows:
            if row["id"] not in held:  # erased while the batch waited: its events name nobody now
                for name in ("email", "external_id"):
                    if row[name]:
                        self.gone.add((name, row[name]))
                continue
            row["merged_into_id"] = held[row["id"]]
            person = _Person(id=row.pop("id"), stamps={}, values=row)
            person.original = dict(row)
            if row["merged_into_id"]:
                self.merged[person.id] = row["merged_into_id"]
            if row["email"]:
                self.by_email[row["email"]] = person
            if row["external_id"]:
                self.by_external[row["external_id"]] = person

    def _find(self, user: dict[str, str]) -> _Person | None:
        """The person these identifiers name (ConflictError when they name two)."""
        if self.gone & set(user.items()):
            raise ValidationError({"user": [UNKNOWN_USER]})  # erased meanwhile: not made again
        by_email = self.by_email.get(user.get("email", ""))
        by_external = self.by_external.get(user.get("external_id", ""))
        if any(p is not None and p.id in self.merged for p in (by_email, by_external)):
            # Rare: follow the merge the one-at-a-time way (it also raises on two contacts).
            contact = contacts.contact_find(email=user.get("email"), external_id=user.get("external_id"))
            return self._person_for(contact) if contact is not None else None
        if by_email is not None and by_external is not None and by_email is not by_external:
            raise ConflictError(
                "The email and the app user id belong to two different contacts; merge them first.",
                fields={"email": [f"contact {by_email.id}"], "external_id": [f"contact {by_external.id}"]},
                code="identity_conflict",
            )
        return by_email or by_external

    def _person_for(self, contact: Contact) -> _Person:
        for person in (self.by_email.get(contact.email or ""), self.by_external.get(contact.external_id or "")):
            if person is not None and person.id == contact.pk:
                return person
        row = (
            Contact.objects.filter(pk=contact.pk).select_for_update(no_key=True).values(*_READ).get()
        )  # the survivor, locked like the others
        person = _Person(id=row.pop("id"), stamps=dict(row.pop("group_timestamps") or {}), values=row)
        person.original = dict(row)
        self.by_email.setdefault(row["email"] or "", person)
        self.by_external.setdefault(row["external_id"] or "", person)
        return person

    def _lock(self, indices) -> None:
        """Contacts whose fields or group stamps events will write: locked in id order (two
        batches wait for each other, never deadlock) and read again, so the conflict policy
        decides on what is stored and no concurrent write is lost."""
        people = set()
        for index in indices:
            event = self.events[index]
            if self.contact_fields(event) is not None:
                try:
                    person = self._find(event.user)
                except (ConflictError, ValidationError):
                    continue  # refused when planned
                if person is not None and not person.new:
                    people.add(person)
        if not people:
            return
        by_id = {p.id: p for p in people}
        rows = Contact.objects.filter(pk__in=sorted(by_id)).select_for_update(no_key=True).order_by("id")
        for row in rows.values(*_READ):
            person = by_id[row.pop("id")]
            person.stamps = dict(row.pop("group_timestamps") or {})
            person.values, person.original = row, dict(row)

    # -- planning -----------------------------------------------------------------------------

    def run(self) -> dict[int, Outcome]:
        """Apply the events (in order); one Outcome per event's index."""
        outcomes: dict[int, Outcome] = {}
        planned: list[_Row] = []
        indices = range(len(self.events))
        rules = list(LifecycleRule.objects.filter(enabled=True).values_list("event_type", "to_stage"))
        self._lock(indices)
        for index in indices:
            try:
                planned.append(self._plan(index, rules))
            except (ValidationError, ConflictError) as exc:
                outcomes[index] = Outcome.rejected(exc)
        self._create_new(planned)
        for row in planned:
            if row.person.failed is not None:
                outcomes[row.index] = Outcome.rejected(row.person.failed)
        planned = [row for row in planned if row.person.failed is None]
        self._write_contacts(planned)
        activity_ids = self._write_activities(planned)
        self._announce(planned, activity_ids)
        for row, activity_id in zip(planned, activity_ids, strict=True):
            for to_stage in row.moves:
                self._move(row, to_stage)
            outcomes[row.index] = Outcome.accepted(
                {"contact": row.person.id, "activity": activity_id, "stale": row.stale}
            )
        return outcomes

    def _plan(self, index: int, rules: list[tuple[str, str]]) -> _Row:
        event = self.events[index]
        person = self._find(event.user)
        if person is None:
            if not self.creates_user(event):
                raise ValidationError({"user": [UNKNOWN_USER]})
            person = self._new_person(event.user)
        elif person.new:
            self._fill_new(person, event.user)
        fields = self.contact_fields(event)
        stale: list[str] = []
        if fields is not None:
            if fields and not set(fields) <= WRITABLE_FIELDS:
                raise ValueError(f"{event.type}: the timeline path writes only {sorted(WRITABLE_FIELDS)}")
            if not person.new:
                self._fill_identity(person, event)
            # The identifiers are not weighed: they find the contact, whatever the policy says
            # (contacts.contact_sync), so they neither stamp the identity group (a login would
            # make an older name change stale) nor go stale.
            applied, stale_values, stamps = conflict.resolve(
                stamps=person.stamps, source=event.source, occurred_at=event.occurred_at, fields=fields
            )
            person.values.update(applied)
            person.stamped = person.stamped or stamps != person.stamps
            person.stamps = stamps
            stale = sorted(stale_values)
        acted = self.user_acted(event)
        if acted and (person.last_active is None or person.last_active < event.occurred_at):
            person.last_active = event.occurred_at
        properties = dict(event.properties)
        if stale:
            properties["_stale_fields"] = stale
        row = _Row(index, person, event.type, event.occurred_at, event.source[:50], properties, stale)
        for event_type, to_stage in rules:  # lifecycle_apply_event's order (rules by event type)
            if (event_type == event.type or (acted and event_type == "any_activity")) and lifecycle.is_allowed(
                person.stage, to_stage
            ):
                row.moves.append(to_stage)
                person.values["lifecycle_stage"] = to_stage
        return row

    def _new_person(self, user: dict[str, str]) -> _Person:
        defaults = Contact()
        values = {name: getattr(defaults, name) for name in _READ if name not in ("id", "group_timestamps")}
        values.update(email=user.get("email"), external_id=user.get("external_id"))
        person = _Person(id=None, values=values, stamps={}, new=True)
        person.original = dict(values)
        self._index(person)
        return person

    def _fill_new(self, person: _Person, user: dict[str, str]) -> None:
        """A later event names a new person by one more identifier: it is created with both."""
        for name in ("email", "external_id"):
            if user.get(name) and not person.values[name]:
                person.values[name] = user[name]
        self._index(person)

    def _index(self, person: _Person) -> None:
        if person.values["email"]:
            self.by_email[person.values["email"]] = person
        if person.values["external_id"]:
            self.by_external[person.values["external_id"]] = person

    def _fill_identity(self, person: _Person, event) -> None:
        """The event names the contact by an identifier it lacks: the one-at-a-time service
        adds it (uniqueness, the suppression list)."""
        missing = {k: v for k, v in event.user.items() if k in ("email", "external_id") and not person.values[k]}
        if not missing:
            return
        with transaction.atomic():
            contacts.contact_sync(
                actor=self.actor,
                sync_source=event.source,
                occurred_at=event.occurred_at,
                email=event.user.get("email"),
                external_id=event.user.get("external_id"),
            )
        person.values.update(missing)
        person.original.update(missing)
        self._index(person)

    # -- writing ------------------------------------------------------------------------------

    def _create_new(self, planned: list[_Row]) -> None:
        new = list(dict.fromkeys(row.person for row in planned if row.person.new))
        if not new:
            return
        # Created already active: the UPDATE that follows then only stamps the groups, which
        # touches no indexed column and can stay on the row's page (a HOT update).
        rows = [
            {**{k: p.values[k] for k in ("email", "external_id") if p.values[k]}, "last_active_at": p.last_active}
            for p in new
        ]
        for person, result in zip(new, contacts_bulk_upsert(rows=rows, actor=self.actor, stamp_as=None), strict=True):
            if result["status"] == "error":
                person.failed = ValidationError(result["errors"])
            else:
                person.id = result["id"]
                person.stamped = True
                person.values["last_active_at"] = person.original["last_active_at"] = person.last_active

    def _write_contacts(self, planned: list[_Row]) -> None:
        """One UPDATE for every contact the batch touches: changed fields, group stamps, and
        last_active_at moved forward only (as activity_record does)."""
        changes = {p: _changes(p) for p in dict.fromkeys(row.person for row in planned)}
        people = [p for p, changed in changes.items() if changed or p.stamped or _stale_touch(p)]
        if not people:
            return
        columns = sorted({name for changed in changes.values() for name in changed})
        now = timezone.now()
        arrays, names = ["%s::bigint[]", "%s::boolean[]", "%s::text[]", "%s::timestamptz[]", "%s::boolean[]"], []
        params: list[Any] = [
            [p.id for p in people],
            [p.stamped for p in people],
            [django_dumps(p.stamps) for p in people],
            [p.last_active for p in people],
            [bool(changes[p]) for p in people],
        ]
        sets = [
            "group_timestamps = CASE WHEN v.stamped THEN v.stamps::jsonb ELSE c.group_timestamps END",
            "last_active_at = CASE WHEN c.last_active_at IS NULL OR c.last_active_at < v.active "
            "THEN v.active ELSE c.last_active_at END",
            "updated_at = CASE WHEN v.changed THEN %s ELSE c.updated_at END",
        ]
        for i, name in enumerate(columns):
            column = Contact._meta.get_field(name)
            arrays += [f"%s::{column.db_type(connection)}[]", "%s::boolean[]"]
            names += [f"v{i}", f"p{i}"]
            params += [[p.values.get(name) for p in people], [name in changes[p] for p in people]]
            sets.append(f'"{column.column}" = CASE WHEN v.p{i} THEN v.v{i} ELSE c."{column.column}" END')
        sql = (
            f"UPDATE contacts_contact AS c SET {', '.join(sets)} "  # noqa: S608 - the model's own columns
            f"FROM unnest({', '.join(arrays)}) AS v({', '.join([*_FIXED, *names])}) "
            "WHERE c.id = v.id AND (v.changed OR v.stamped OR c.last_active_at IS NULL OR c.last_active_at < v.active)"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [now, *params])
        changed = [(p, changes[p]) for p in people if changes[p]]
        if changed:
            audit_record_many(
                actor=self.actor,
                action="contact.update",
                object_type="contacts.contact",
                rows=[(p.id, c) for p, c in changed],
            )
            outbox_publish_many(
                topic="contact.updated",
                object_type="contacts.contact",
                rows=[(p.id, {**_payload(p), "changed": sorted(c)}) for p, c in changed],
                actor=self.actor,
            )

    def _announce(self, planned: list[_Row], activity_ids: list[int]) -> None:
        if self.announcement is None:
            return
        by_topic: dict[str, list[tuple[int, dict]]] = {}
        for row, activity_id in zip(planned, activity_ids, strict=True):
            values = row.person.values
            contact = {"id": row.person.id, "email": values.get("email"), "external_id": values.get("external_id")}
            if said := self.announcement(self.events[row.index], contact, activity_id):
                topic, payload = said
                by_topic.setdefault(topic, []).append((activity_id, payload))
        for topic, rows in by_topic.items():
            outbox_publish_many(topic=topic, object_type="contacts.activity", rows=rows, actor=self.actor)

    def _write_activities(self, planned: list[_Row]) -> list[int]:
        """One INSERT ... SELECT FROM jsonb_to_recordset: the rows travel as one JSON document
        (psycopg would quote a thousand-element array per column in Python)."""
        if not planned:
            return []
        properties = Activity._meta.get_field("properties")
        as_json = properties.db_type(connection) == "jsonb"
        rows = [
            {
                "n": n,
                "c": row.person.id,
                "t": row.type,
                "o": row.occurred_at.isoformat(),
                "s": row.source,
                "p": row.properties if as_json else properties.get_db_prep_save(row.properties, connection),
            }
            for n, row in enumerate(planned)
        ]
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO contacts_activity (contact_id, type, occurred_at, source, properties, created_at) "  # noqa: S608
                "SELECT v.c, v.t, v.o, v.s, v.p, %s FROM jsonb_to_recordset(%s::jsonb) "
                f"AS v(n int, c bigint, t text, o timestamptz, s text, p {'jsonb' if as_json else 'text'}) "
                "ORDER BY v.n RETURNING id",
                [timezone.now(), django_dumps(rows)],
            )
            # The rows were inserted in input order, so their ids (one sequence) ascend in it.
            ids = sorted(pk for (pk,) in cursor.fetchall())
        audit_record_many(
            actor=self.actor,
            action="activity.create",
            object_type="contacts.activity",
            rows=[(pk, {"type": row.type}) for pk, row in zip(ids, planned, strict=True)],
        )
        return ids

    def _move(self, row: _Row, to_stage: str) -> None:
        """A lifecycle move a rule asks for: the service locks, re-checks and records it."""
        try:
            with transaction.atomic():
                contacts.lifecycle_transition(
                    contact=Contact(pk=row.person.id),
                    to_stage=to_stage,
                    reason=f"event {row.type}",
                    actor=self.actor,
                    occurred_at=row.occurred_at,
                )
        except ValidationError:
            pass  # the stage changed meanwhile and the move is no longer allowed: leave it


_FIXED = ("id", "stamped", "stamps", "active", "changed")


def _changes(person: _Person) -> dict[str, tuple[Any, Any]]:
    """Fields whose value this batch changed (a new person's, against the defaults it was made with)."""
    return {
        name: (person.original[name], person.values[name])
        for name in WRITABLE_FIELDS & person.values.keys()
        if person.values[name] != person.original[name]
    }


def _stale_touch(person: _Person) -> bool:
    if person.last_active is None:  # only events the user did not do (reminders): nothing to touch
        return False
    stored = person.values["last_active_at"]
    return stored is None or stored < person.last_active - TOUCH_EVERY


def _payload(person: _Person) -> dict[str, Any]:
    return {"id": person.id, **{name: person.values[name] for name in PAYLOAD_FIELDS}}
