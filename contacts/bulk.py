"""contacts_bulk_upsert: up to 1,000 contacts in a handful of statements.

The one-at-a-time services would cost a few queries per contact; this path validates every
row in Python with the same rules (contacts.services._clean_fields), finds existing contacts
in two queries, updates them with one UPDATE ... FROM unnest(...) and creates the rest with
one INSERT, then writes the audit and outbox rows in one INSERT each. A bad row is reported
and does not stop the others; a row that loses a race with a concurrent writer is retried
through the one-at-a-time service.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone
from rest_framework.exceptions import APIException

from compliance.services import audit_record_many
from compliance.suppression import suppressed_values
from contacts import conflict, services
from contacts.models import Contact, CustomFieldDefinition
from crm_platform.actor import Actor
from crm_platform.errors import ConflictError
from crm_platform.outbox import outbox_publish_many

MAX_ROWS = 1000
SUPPRESSED = "On the suppression list: its owner asked to be erased."
_FK = {"company": "company_id", "owner": "owner_id"}  # the API's name -> the column a bulk row writes
ATTEMPTS = 3  # a batch deadlocked this many times in a row is answered 503
DEADLOCK = "40P01"  # PostgreSQL's deadlock_detected

logger = logging.getLogger(__name__)


class BulkUpsertContended(APIException):
    """Every attempt at the batch deadlocked with concurrent writers: nothing was written; the
    client sends it again later (503 with Retry-After, in the JSON error body)."""

    status_code = 503
    default_code = "unavailable"
    default_detail = "Other writes to these contacts got in the way; nothing was written. Send the batch again."
    wait = 1  # seconds, as Retry-After


def contacts_bulk_upsert(
    *, rows: list[dict[str, Any]], actor: Actor, stamp_as: str | None = conflict.STAFF
) -> list[dict[str, Any]]:
    """Create or update each row's contact (keyed by email and/or external_id). Returns one
    result per input row, in order: {"index", "status": created|updated|error, "id"?, "errors"?}.

    Under the conflict policy the rows are written by `stamp_as` now (staff: an import through
    the API or the admin, as contact_update's edits), which stamps the groups of the fields each
    row sets, in the same statement; None leaves the stamps to a caller that writes its own
    (the inbound timeline batch, for the new users of its events)."""
    if len(rows) > MAX_ROWS:
        raise ValidationError({"contacts": [f"At most {MAX_ROWS} contacts per request."]})
    definitions = {d.key: d for d in CustomFieldDefinition.objects.all()}
    results: list[dict[str, Any]] = [{"index": i} for i in range(len(rows))]
    prepared: dict[int, tuple[str | None, str | None, dict[str, Any]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for index, row in enumerate(rows):
        try:
            email, external_id, fields = _prepare(row, definitions)
        except ValidationError as exc:
            results[index].update(status="error", errors=exc.message_dict)
            continue
        keys = [k for k in (("email", email), ("external_id", external_id)) if k[1]]
        duplicate = next((seen[k] for k in keys if k in seen), None)
        if duplicate is not None:
            results[index].update(
                status="error", errors={keys[0][0]: [f"Appears earlier in this request (row {duplicate})."]}
            )
            continue
        seen.update({k: index for k in keys})
        prepared[index] = (email, external_id, fields)

    _check_foreign_keys(prepared, results)
    _refuse_suppressed(prepared, results)
    for attempt in range(1, ATTEMPTS + 1):
        # Each attempt works on copies: a deadlocked one leaves nothing behind (its savepoint or
        # transaction is rolled back, and so are its results and the fields it filled in).
        written = [dict(result) for result in results]
        try:
            with transaction.atomic():
                copies = {i: (e, x, dict(f)) for i, (e, x, f) in prepared.items()}
                _write(copies, written, actor, stamp_as, definitions)
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != DEADLOCK:
                raise
            logger.warning("contacts bulk upsert deadlocked (attempt %d of %d)", attempt, ATTEMPTS)
            if attempt == ATTEMPTS:
                raise BulkUpsertContended from exc
            continue
        return written
    raise AssertionError("unreachable")


def _write(prepared: dict, results: list[dict], actor: Actor, stamp_as: str | None, definitions: dict) -> None:
    """The batch's writes, in the caller's transaction. Row locks are taken in one order, the
    contacts' ids, whatever the rows' order, and creates go in the order of their keys, so two
    batches naming some of the same contacts in different orders wait for each other instead
    of deadlocking."""
    existing = _existing(prepared.values())
    updates: dict[int, tuple[int, dict[str, Any]]] = {}
    creates: dict[int, tuple[str | None, str | None, dict[str, Any]]] = {}
    merged: list[int] = []
    claimed: dict[int, int] = {}  # contact id -> the first row that names it
    for index, (email, external_id, fields) in prepared.items():
        by_email = existing["email"].get(email) if email else None
        by_external = existing["external_id"].get(external_id) if external_id else None
        if by_email and by_external and by_email["id"] != by_external["id"]:
            results[index].update(
                status="error",
                errors={
                    "email": [f"contact {by_email['id']}"],
                    "external_id": [f"contact {by_external['id']}"],
                },
            )
            continue
        match = by_email or by_external
        if match is None:
            creates[index] = (email, external_id, fields)
            continue
        # Two rows naming one contact by different keys (its email, its app user id) would both
        # go into one UPDATE, of which PostgreSQL applies one: the later row is refused.
        contact_id = match["merged_into_id"] or match["id"]
        if contact_id in claimed:
            key = "email" if by_email else "external_id"
            results[index].update(
                status="error", errors={key: [f"Names the same contact as row {claimed[contact_id]}."]}
            )
            continue
        claimed[contact_id] = index
        if match["merged_into_id"]:
            merged.append(index)  # rare: the identifiers name a merged-away contact
            continue
        if email and not match["email"]:
            fields["email"] = email
        if external_id and not match["external_id"]:
            fields["external_id"] = external_id
        updates[index] = (match["id"], fields)
    if stamp_as is not None:  # an import: a new contact needs its required custom fields, as contact_create
        for index in [i for i, (_, _, fields) in creates.items() if "properties" not in fields]:
            try:
                services.validate_properties({}, definitions=definitions)
            except ValidationError as exc:
                results[index].update(status="error", errors=exc.message_dict)
                del creates[index]
    for index in merged:  # the one-at-a-time service follows the merge to the survivor
        _one_by_one(index, prepared[index], results, actor)
    # stamps(fields=a row's field names) -> the stamps of their groups; None: no stamping
    stamps = None
    if stamp_as is not None:
        stamps = functools.partial(conflict.stamp, {}, source=stamp_as, occurred_at=timezone.now())
    _update(updates, prepared, results, actor, stamps)
    # Again, for the rows no contact answered when locked: the list was read before the locks,
    # and an erasure that held one of these contacts meanwhile has put the person on it since.
    _refuse_suppressed(creates, results)
    _create(creates, prepared, results, actor, stamps)


def _prepare(row: Any, definitions) -> tuple[str | None, str | None, dict[str, Any]]:
    if not isinstance(row, dict):
        raise ValidationError({"non_field_errors": ["Each contact is an object."]})
    row = dict(row)
    email = services.normalize_email(row.pop("email", None))
    external_id = services.normalize_external_id(row.pop("external_id", None))
    if not email and not external_id:
        raise ValidationError({"email": ["Give an email or an app user id (external_id)."]})
    foreign = {column: row.pop(name) for name, column in _FK.items() if name in row}
    for column, value in foreign.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValidationError({column.removesuffix("_id"): ["An id."]})
    fields = services._clean_fields(row, definitions=definitions)
    fields.update(foreign)
    return email, external_id, fields


def _check_foreign_keys(prepared: dict, results: list[dict]) -> None:
    """Rows naming a company or owner that does not exist are errors (two queries in all)."""
    from django.contrib.auth import get_user_model

    from contacts.models import Company

    known = {
        "company_id": set(
            Company.objects.filter(
                pk__in={f["company_id"] for *_, f in prepared.values() if f.get("company_id")}
            ).values_list("pk", flat=True)
        ),
        "owner_id": set(
            get_user_model()
            .objects.filter(is_staff=True, pk__in={f["owner_id"] for *_, f in prepared.values() if f.get("owner_id")})
            .values_list("pk", flat=True)
        ),
    }
    for index, (_, _, fields) in list(prepared.items()):
        bad = {c: ["No such record."] for c in known if fields.get(c) is not None and fields[c] not in known[c]}
        if bad:
            results[index].update(status="error", errors={c.removesuffix("_id"): m for c, m in bad.items()})
            del prepared[index]


def _refuse_suppressed(prepared: dict, results: list[dict]) -> None:
    """Rows whose email, phone or app user id is on compliance's suppression list (an erased
    person's) are errors: one query for the whole batch."""
    hits = suppressed_values(
        emails=[email for email, _, _ in prepared.values()],
        phones=[f.get("phone") for *_, f in prepared.values()],
        external_ids=[external_id for _, external_id, _ in prepared.values()],
    )
    if not hits:
        return
    for index, (email, external_id, fields) in list(prepared.items()):
        named = (("email", email), ("phone", fields.get("phone")), ("external_id", external_id))
        bad = {name: value for name, value in named if value and value in hits}
        if bad:
            results[index].update(status="error", errors={name: [SUPPRESSED] for name in bad})
            del prepared[index]


def _existing(prepared) -> dict[str, dict]:
    """The contacts the rows name, by email and by external id, locked in the order of their
    ids (one statement: two would each lock in order, but not both together), so concurrent
    batches take their row locks in one order whatever their rows' order."""
    emails = {p[0] for p in prepared if p[0]}
    external_ids = {p[1] for p in prepared if p[1]}
    found = {"email": {}, "external_id": {}}
    if not emails and not external_ids:
        return found
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, email, external_id, merged_into_id FROM contacts_contact "
            "WHERE email = ANY(%s::varchar[]) OR external_id = ANY(%s::varchar[]) "
            "ORDER BY id FOR NO KEY UPDATE",
            [sorted(emails), sorted(external_ids)],
        )
        for pk, email, external_id, merged_into_id in cursor.fetchall():
            row = {"id": pk, "email": email, "external_id": external_id, "merged_into_id": merged_into_id}
            if email in emails:
                found["email"][email] = row
            if external_id in external_ids:
                found["external_id"][external_id] = row
    return found


def _column_types() -> dict[str, str]:
    types = {}
    for field in Contact._meta.concrete_fields:
        db_type = field.db_type(connection)
        # Arrays and JSON travel as JSON text: unnest() would flatten a two-dimensional array.
        types[field.column] = "text" if db_type.endswith("[]") or db_type == "jsonb" else db_type
    return types


_FIELDS_BY_COLUMN = {f.column: f for f in Contact._meta.concrete_fields}


def _sql_value(column: str, value: Any) -> Any:
    """A value as its column's array wants it: JSON text for arrays and JSON, and one Python
    type per column (psycopg refuses an array mixing 0 and 0.4)."""
    if column in ("tags", "properties", "score_explanation", "group_timestamps"):
        return json.dumps(value)
    if value is None:
        return None
    return _FIELDS_BY_COLUMN[column].to_python(value)


def _read_back(column: str, ref: str) -> str:
    if column == "tags":
        return f"ARRAY(SELECT jsonb_array_elements_text({ref}::jsonb))::varchar(50)[]"
    if column in ("properties", "score_explanation", "group_timestamps"):
        return f"{ref}::jsonb"
    return ref


def _update(updates: dict[int, tuple[int, dict[str, Any]]], prepared, results, actor: Actor, stamps) -> None:
    if not updates:
        return
    columns = sorted({name for _, fields in updates.values() for name in fields})
    types = _column_types()
    arrays, names, sets = ["%s::bigint[]"], ["id"], []
    unnest_params: list[Any] = [[contact_id for contact_id, _ in updates.values()]]
    if stamps is not None:  # the groups each row writes, stamped over the stored stamps
        arrays, names = [*arrays, "%s::text[]"], [*names, "s"]
        unnest_params.append([json.dumps(stamps(fields=fields)) for _, fields in updates.values()])
        sets.append("group_timestamps = c.group_timestamps || v.s::jsonb")
    for i, column in enumerate(columns):
        arrays += [f"%s::{types[column]}[]", "%s::boolean[]"]
        names += [f"v{i}", f"p{i}"]
        unnest_params.append([_sql_value(column, fields.get(column)) for _, fields in updates.values()])
        unnest_params.append([column in fields for _, fields in updates.values()])
        sets.append(f'"{column}" = CASE WHEN v.p{i} THEN {_read_back(column, f"v.v{i}")} ELSE c."{column}" END')
    sql = (
        f'UPDATE contacts_contact AS c SET {", ".join(sets)}, "updated_at" = %s '  # noqa: S608 - model's columns
        f"FROM unnest({', '.join(arrays)}) AS v({', '.join(names)}) WHERE c.id = v.id"
    )
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [timezone.now(), *unnest_params])
    except IntegrityError:
        # An email or external id filled in here was taken meanwhile: settle each row alone.
        for index in updates:
            _one_by_one(index, prepared[index], results, actor)
        return
    for index, (contact_id, _) in updates.items():
        results[index].update(status="updated", id=contact_id)
    changes = [
        (contact_id, {name: (None, value) for name, value in fields.items()}, contact_id)
        for contact_id, fields in updates.values()
    ]
    audit_record_many(actor=actor, action="contact.update", object_type="contacts.contact", rows=changes)
    outbox_publish_many(
        topic="contact.updated",
        object_type="contacts.contact",
        rows=[(contact_id, {"id": contact_id, "changed": sorted(fields)}) for contact_id, fields in updates.values()],
        actor=actor,
    )


def _create(creates, prepared, results, actor: Actor, stamps) -> None:
    """One INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING: rows a concurrent writer
    created first come back missing and are settled one by one."""
    if not creates:
        return
    # In the order of their keys: two batches creating some of the same contacts wait for each
    # other's inserts in one order instead of deadlocking.
    creates = dict(sorted(creates.items(), key=lambda item: (item[1][0] is None, item[1][0] or "", item[1][1] or "")))
    now = timezone.now()
    types = _column_types()
    # Only the columns some row gives travel as arrays; every other column is the same for all
    # rows (its default, or now) and travels once, as a scalar: quoting ~40 arrays of 1,000
    # values was most of this request's time.
    given_names = {"email", "external_id"}.union(*(values.keys() for _, _, values in creates.values()))
    if stamps is not None:
        given_names.add("group_timestamps")
    varying, constant = [], []
    for field in Contact._meta.concrete_fields:
        if field.primary_key:
            continue
        if field.attname in given_names:
            varying.append(field)
        else:
            constant.append((field, now if field.attname in ("created_at", "updated_at") else field.get_default()))
    rows = []
    for email, external_id, values in creates.values():
        given = {"email": email, "external_id": external_id, **values}
        if stamps is not None:
            given["group_timestamps"] = stamps(fields=[name for name, value in given.items() if value is not None])
        rows.append([given[f.attname] if f.attname in given else f.get_default() for f in varying])
    columns = [f.column for f in varying] + [f.column for f, _ in constant]
    arrays = ", ".join(f"%s::{types[f.column]}[]" for f in varying)
    names = ", ".join(f"v{i}" for i in range(len(varying)))
    selects = ", ".join(
        [_read_back(f.column, f"v{i}") for i, f in enumerate(varying)]
        + [_read_back(f.column, f"%s::{types[f.column]}") for f, _ in constant]
    )
    sql = (
        f"INSERT INTO contacts_contact ({', '.join(columns)}) "  # noqa: S608 - the model's own columns
        f"SELECT {selects} FROM unnest({arrays}) AS v({names}) "
        "ON CONFLICT DO NOTHING RETURNING id, email, external_id"
    )
    params = [_sql_value(f.column, value) for f, value in constant] + [
        [_sql_value(f.column, row[i]) for row in rows] for i, f in enumerate(varying)
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = cursor.fetchall()
    by_email = {email: pk for pk, email, _ in inserted if email}
    by_external = {external_id: pk for pk, _, external_id in inserted if external_id}
    created = []
    for index, (email, external_id, values) in creates.items():
        pk = by_email.get(email) if email else by_external.get(external_id)
        if pk is None:  # a concurrent writer made this contact first
            _one_by_one(index, prepared[index], results, actor)
            continue
        results[index].update(status="created", id=pk)
        created.append((pk, email, external_id, values))
    audit_record_many(
        actor=actor,
        action="contact.create",
        object_type="contacts.contact",
        rows=[(pk, {name: (None, v) for name, v in values.items()}, pk) for pk, _, _, values in created],
    )
    outbox_publish_many(
        topic="contact.created",
        object_type="contacts.contact",
        rows=[(pk, _payload(pk, email, external_id, values)) for pk, email, external_id, values in created],
        actor=actor,
    )


def _payload(pk: int, email, external_id, values: dict[str, Any]) -> dict[str, Any]:
    """services.contact_payload's shape for a contact created here (defaults where not given)."""
    given = {**_payload_defaults(), **values, "email": email, "external_id": external_id}
    return {"id": pk, **{name: given[name] for name in services.CONTACT_PAYLOAD_FIELDS}}


@functools.cache
def _payload_defaults() -> dict[str, Any]:
    defaults = Contact()
    return {name: getattr(defaults, name) for name in services.CONTACT_PAYLOAD_FIELDS}


def _one_by_one(index: int, row, results, actor: Actor) -> None:
    email, external_id, fields = row
    fields = {k: v for k, v in fields.items() if k not in ("email", "external_id")}
    try:
        with transaction.atomic():
            contact, created = services.contact_upsert(actor=actor, email=email, external_id=external_id, **fields)
    except ValidationError as exc:
        results[index].update(status="error", errors=exc.message_dict)
        return
    except ConflictError as exc:
        results[index].update(status="error", errors=exc.fields or {"non_field_errors": [exc.message]})
        return
    results[index].update(status="created" if created else "updated", id=contact.pk)


# -- staff bulk actions --------------------------------------------------------------------------

BATCH = 5000


def contacts_set_owner(*, ids: list[int], owner_id: int | None, actor: Actor) -> int:
    """Give many contacts one owner (None: no owner), set-based: per batch of BATCH ids one
    UPDATE ... RETURNING the old owner, one audit INSERT and one outbox INSERT, each batch its
    own transaction. Contacts that already have that owner are left alone. Returns how many
    changed. ValidationError when the owner is not a staff user."""
    if owner_id is not None:
        from django.contrib.auth import get_user_model

        if not get_user_model().objects.filter(pk=owner_id, is_staff=True).exists():
            raise ValidationError({"owner": ["No such staff user."]})
    changed = 0
    for batch in _batches(ids):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "UPDATE contacts_contact AS c SET owner_id = %s, updated_at = %s "
                "FROM (SELECT id, owner_id FROM contacts_contact WHERE id = ANY(%s::bigint[]) "
                "      AND owner_id IS DISTINCT FROM %s ORDER BY id FOR UPDATE) AS old "
                "WHERE c.id = old.id RETURNING c.id, old.owner_id",
                [owner_id, timezone.now(), batch, owner_id],
            )
            rows = cursor.fetchall()
            _announce(actor, [(pk, {"owner": (old, owner_id)}) for pk, old in rows], ["owner"])
        changed += len(rows)
    return changed


def contacts_add_tag(*, ids: list[int], tag: str, actor: Actor) -> int:
    """Add one tag to many contacts, set-based like contacts_set_owner (tags stay sorted and
    unique, as contact_update keeps them). Returns how many gained the tag."""
    tag = (tag or "").strip().lower()
    if not 0 < len(tag) <= 50:
        raise ValidationError({"tag": ["A tag of 1 to 50 characters."]})
    changed = 0
    for batch in _batches(ids):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "UPDATE contacts_contact AS c "
                "SET tags = ARRAY(SELECT DISTINCT t FROM unnest(c.tags || ARRAY[%s]::varchar(50)[]) AS t ORDER BY t), "
                "    updated_at = %s "
                "FROM (SELECT id FROM contacts_contact WHERE id = ANY(%s::bigint[]) "
                "      AND NOT tags @> ARRAY[%s]::varchar(50)[] ORDER BY id FOR UPDATE) AS chosen "
                "WHERE c.id = chosen.id RETURNING c.id",
                [tag, timezone.now(), batch, tag],
            )
            rows = cursor.fetchall()
            _announce(actor, [(pk, {"tags": {"added": tag}}) for (pk,) in rows], ["tags"])
        changed += len(rows)
    return changed


def contacts_bulk_change(*, action: str, ids: list[int], value: Any, actor: Actor) -> int:
    """One staff bulk action by name, as the admin runs it inline and the bulk-queue job runs it
    later: "set_owner" (value: a staff user id or None) or "add_tag" (value: the tag)."""
    if action == "set_owner":
        return contacts_set_owner(ids=ids, owner_id=value, actor=actor)
    if action == "add_tag":
        return contacts_add_tag(ids=ids, tag=value, actor=actor)
    raise ValueError(f"unknown bulk change {action!r}")


def _batches(ids: list[int]):
    ids = sorted({int(i) for i in ids})
    for start in range(0, len(ids), BATCH):
        yield ids[start : start + BATCH]


def _announce(actor: Actor, changes: list[tuple[int, dict[str, Any]]], fields: list[str]) -> None:
    """The audit rows and contact.updated outbox rows of a set-based change, in its transaction."""
    audit_record_many(
        actor=actor, action="contact.update", object_type="contacts.contact", rows=[(pk, c, pk) for pk, c in changes]
    )
    outbox_publish_many(
        topic="contact.updated",
        object_type="contacts.contact",
        rows=[(pk, {"id": pk, "changed": fields}) for pk, _ in changes],
        actor=actor,
    )
