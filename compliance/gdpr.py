"""GDPR / CCPA: erasure, export and legal holds.

`contact_erase` is the one erasure, whoever asks (API, seed 002's DELETE /api/crm/users/:userId,
the admin action, a provider's privacyDeletion webhook). It walks the data-subject registry
(compliance.subjects) and never imports a domain app.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import zipfile
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import CharField, Q
from django.db.models.functions import Cast
from django.utils import timezone

from compliance.crypto import DecryptionError, decrypt, decrypt_bytes, encrypt, hmac_digest
from compliance.models_privacy import Erasure, ExportBundle, LegalHold
from compliance.registry import personal_fields
from compliance.services import audit_record
from compliance.subjects import ERASE_ANONYMISE, ERASE_DELETE, subject_data, subject_model
from compliance.suppression import suppression_add
from crm_platform.actor import Actor
from crm_platform.errors import ConflictError
from crm_platform.idempotency import contact_subject
from crm_platform.locking import locked_row
from crm_platform.models import IdempotencyRecord, OutboxMessage
from crm_platform.outbox import outbox_publish

logger = logging.getLogger(__name__)

ERASED = "[erased]"
_EXPORT_SALT = "compliance.export-bundle"


class SubjectNotFound(LookupError):
    """No such contact, and no erasure of it on record (the API answers 404)."""


def _contact_model():
    return apps.get_model(subject_model().model_label)


# ----------------------------------------------------------------------------- legal hold


def legal_hold_place(*, contact, reason: str, actor: Actor, user=None) -> LegalHold:
    """Put the contact under legal hold: erasure is refused (409 naming `reason`) until released."""
    if not reason or not reason.strip():
        raise ValidationError({"reason": ["A legal hold states its reason (the matter, the case number)."]})
    with transaction.atomic():
        hold = LegalHold.objects.create(contact=contact, reason=reason.strip()[:300], placed_by=user)
        audit_record(actor=actor, action="legal_hold.place", obj=hold, changes={"contact": contact.pk})
    return hold


def legal_hold_release(*, hold: LegalHold, actor: Actor, user=None) -> LegalHold:
    """Release a hold (idempotent)."""
    with transaction.atomic():
        locked = locked_row(LegalHold.objects.select_for_update(), hold.pk)
        if locked.released_at is None:
            locked.released_at = timezone.now()
            locked.released_by = user
            locked.save(update_fields=["released_at", "released_by"])
            audit_record(actor=actor, action="legal_hold.release", obj=locked, changes={"contact": locked.contact_id})
    return locked


# ----------------------------------------------------------------------------- erasure


def erasure_find(*, contact_id: int | None = None, external_id: str | None = None) -> Erasure | None:
    """The recorded erasure of this contact id (any contact of its merge group) or app user id."""
    if contact_id is not None:
        return Erasure.objects.filter(Q(contact_id=contact_id) | Q(contact_ids__contains=[contact_id])).first()
    if external_id:
        return Erasure.objects.filter(subject_digests__contains=[_subject_digest(external_id)]).first()
    return None


def _subject_digest(external_id: str) -> str:
    return hmac_digest(f"external_id:{external_id}")


def contact_erase_by_external_id(*, external_id: str, actor: Actor) -> tuple[Erasure, bool]:
    """contact_erase for the contact whose app user id is `external_id` (seed 002)."""
    subject = subject_model()
    contact_id = (
        _contact_model().objects.filter(**{subject.external_id: external_id}).values_list("pk", flat=True).first()
    )
    if contact_id is None:
        done = erasure_find(external_id=external_id)
        if done is None:
            raise SubjectNotFound(external_id)
        return done, False
    return contact_erase(contact_id=contact_id, actor=actor)


def contact_erase(*, contact_id: int, actor: Actor) -> tuple[Erasure, bool]:
    """Erase everything about a person, in one transaction. Returns (the erasure record, done now).

    Follows a merged-away contact to its survivor and erases the whole merge group. Each
    registered app's rows are deleted or anonymised set-based; the admin log's labels and
    outbox rows of those objects, and stored API responses naming the person, are scrubbed;
    the contact rows go last. Their emails and phones stay only as keyed hashes on the
    suppression list, and `contact.deleted` goes to the outbox so every connected provider
    deletes its copy (the identifiers travel encrypted: `erasure_subject`).

    Idempotent: erasing an erased contact returns the first erasure's record (done now =
    False). Raises SubjectNotFound for an id never seen, ConflictError (code `legal_hold`)
    naming the hold's reason when any contact of the group is under legal hold."""
    done = erasure_find(contact_id=contact_id)
    if done is not None:
        return done, False
    Contact = _contact_model()
    subject = subject_model()
    with transaction.atomic():
        contact = Contact.objects.select_for_update().filter(pk=contact_id).first()
        if contact is None:
            done = erasure_find(contact_id=contact_id)  # a concurrent erasure finished first
            if done is None:
                raise SubjectNotFound(contact_id)
            return done, False
        group = _merge_group(Contact, contact, subject.merged_into)
        survivor_id = group[0]
        list(Contact.objects.select_for_update().filter(pk__in=group).values_list("pk", flat=True))
        hold = LegalHold.objects.filter(contact_id__in=group, released_at__isnull=True).order_by("placed_at").first()
        if hold is not None:
            raise ConflictError(
                f"Contact {hold.contact_id} is under legal hold and cannot be erased: {hold.reason}",
                fields={"legal_hold": [hold.reason]},
                code="legal_hold",
            )
        identities = list(
            Contact.objects.filter(pk__in=group).values(subject.email, subject.phone, subject.external_id)
        )
        emails = sorted({i[subject.email] for i in identities if i[subject.email]})
        phones = sorted({i[subject.phone] for i in identities if i[subject.phone]})
        external_ids = sorted({i[subject.external_id] for i in identities if i[subject.external_id]})
        refs = subject.refs(contact_ids=group) if subject.refs else []

        counts: dict[str, int] = {}
        for data in subject_data():
            model = apps.get_model(data.model_label)
            rows = model._base_manager.filter(**{f"{data.contact_path}__in": group})
            _scrub_traces(model, rows)
            if callable(data.erase):
                erased = data.erase(contact_ids=group, actor=actor)
                for label, n in erased.items() if isinstance(erased, dict) else [(data.model_label, erased)]:
                    _count(counts, label.lower(), n)
            elif data.erase == ERASE_DELETE:
                for label, n in rows.delete()[1].items():
                    _count(counts, label.lower(), n)
            elif data.erase == ERASE_ANONYMISE:
                _count(counts, data.model_label, _anonymise(model, rows, data.contact_path))
        people = Contact._base_manager.filter(pk__in=group)
        _scrub_traces(Contact, people)
        since = _created_since(Contact, group)
        scrubbed = _scrub_stored_responses(emails + external_ids, since, contact_ids=group)
        _count(counts, "crm_platform.idempotencyrecord", scrubbed)
        for label, n in people.delete()[1].items():
            _count(counts, label.lower(), n)

        for email in emails:
            suppression_add(actor=actor, email=email)
        for phone in phones:
            suppression_add(actor=actor, phone=phone)
        for external_id in external_ids:  # the app's next event naming them by id would make them again
            suppression_add(actor=actor, external_id=external_id)
        erased_at = timezone.now()
        outbox_publish(
            topic="contact.deleted",
            obj=contact,
            payload={
                "id": survivor_id,
                "contact_ids": group,
                "erased_at": erased_at.isoformat(),
                # Providers find their copy by email, phone, app user id or their own id; these
                # travel encrypted so the outbox row (kept until delivered, then purged) holds no
                # readable personal value. Adapters open it with erasure_subject(payload).
                "subject": encrypt(
                    json.dumps({"emails": emails, "phones": phones, "external_ids": external_ids, "refs": refs})
                ),
            },
            actor=actor,
        )
        erasure = Erasure.objects.create(
            contact_id=survivor_id,
            subject_digests=[_subject_digest(e) for e in external_ids],
            erased_at=erased_at,
            actor_kind=actor.kind,
            actor_id=str(actor.id)[:64],
            contact_ids=group,
            counts=counts,
        )
        audit_record(
            actor=actor,
            action="contact.erase",
            object_type=subject.model_label,
            object_id=survivor_id,
            changes={"contacts": len(group), "rows": sum(counts.values()), "tables": len(counts)},
        )
    return erasure, True


def erasure_outcome(erasure: Erasure) -> dict[str, Any]:
    """What the API answers for an erasure, the first time and every time after."""
    return {
        "status": "erased",
        "contact": erasure.contact_id,
        "contacts": erasure.contact_ids,
        "erased_at": erasure.erased_at.isoformat(),
        "counts": erasure.counts,
        "provider_deletion": "queued",
    }


def erasure_subject(payload: dict[str, Any]) -> dict[str, Any]:
    """For provider adapters handling `contact.deleted`: the erased person's identifiers
    ({"emails", "phones", "external_ids", "refs": [{"provider", "object_type", "external_id"}]})."""
    return json.loads(decrypt(payload["subject"]))


def _count(counts: dict[str, int], label: str, n: int) -> None:
    if n:
        counts[label] = counts.get(label, 0) + n


def _merge_group(Contact, contact, merged_into: str | None) -> list[int]:
    """The survivor first, then every contact merged into it (at any depth)."""
    if not merged_into:
        return [contact.pk]
    survivor = contact
    seen = {survivor.pk}
    while getattr(survivor, f"{merged_into}_id"):
        survivor = Contact.objects.get(pk=getattr(survivor, f"{merged_into}_id"))
        if survivor.pk in seen:
            break
        seen.add(survivor.pk)
    group, frontier = [survivor.pk], [survivor.pk]
    while frontier:
        frontier = list(Contact.objects.filter(**{f"{merged_into}__in": frontier}).values_list("pk", flat=True))
        frontier = [pk for pk in frontier if pk not in group]
        group += frontier
    return group


def _anonymise(model, rows, contact_path: str) -> int:
    """Blank the model's registered personal fields and cut the link to the contact."""
    values: dict[str, Any] = {}
    for name in personal_fields(model._meta.label_lower):
        field = model._meta.get_field(name)
        values[name] = None if field.null else field.get_default()
    link = model._meta.get_field(contact_path) if "__" not in contact_path else None
    if link is not None and link.null:
        values[link.name] = None
    return rows.update(**values) if values else 0


def _scrub_traces(model, rows) -> None:
    """The outbox rows about these objects (their payloads name the person) go; the admin
    history keeps its rows but loses the objects' labels (str() of a contact is its name)."""
    ids = rows.order_by().annotate(_erased_id=Cast("pk", CharField())).values("_erased_id")
    OutboxMessage.objects.filter(object_type=model._meta.label_lower, object_id__in=ids).delete()
    content_type = ContentType.objects.get_for_model(model, for_concrete_model=False)
    LogEntry.objects.filter(content_type=content_type, object_id__in=ids).update(object_repr=ERASED, change_message="")


def _created_since(Contact, group: list[int]):
    """When the oldest contact of the group was created (None when the model has no such field)."""
    if not any(f.name == "created_at" for f in Contact._meta.concrete_fields):
        return None
    return Contact._base_manager.filter(pk__in=group).aggregate(since=models.Min("created_at"))["since"]


def _scrub_stored_responses(values: list[str], since=None, *, contact_ids: list[int] = ()) -> int:
    """Idempotency records replay stored responses: a create's response holds the email or app
    user id, and the response for one of the person's records (a note's body, a ticket's, an
    order's items) names them by their contact id. Those records go (a retry with the key then
    meets the suppression list, or a contact that is gone). The responses are encrypted: each
    record lists what names it (`subjects`, crm_platform.idempotency.response_subjects), which
    a GIN index finds. Only records written since the person's first contact row was created
    can name them, so the scan covers those."""
    subjects = [hmac_digest(value) for value in values if value] + [contact_subject(pk) for pk in contact_ids]
    if not subjects:
        return 0
    records = IdempotencyRecord.objects.filter(subjects__overlap=subjects)
    if since is not None:
        records = records.filter(created_at__gte=since - dt.timedelta(minutes=5))  # clock skew between writers
    return records.delete()[0]


# ----------------------------------------------------------------------------- export


def export_ttl() -> dt.timedelta:
    return dt.timedelta(hours=settings.GDPR_EXPORT_TTL_HOURS)


def export_request(*, contact, actor: Actor) -> ExportBundle:
    """Start an export of everything about `contact`: a pending bundle now, built by the
    `compliance.tasks.export_build` job after commit."""
    from compliance import tasks

    with transaction.atomic():
        # The contact's row locked first: an erasure beside this one either waits for the bundle
        # (and erases it with the rest) or has already removed the contact (a 404, not a
        # foreign key failing at COMMIT).
        locked_row(type(contact).objects.select_for_update(no_key=True), contact.pk)
        bundle = ExportBundle.objects.create(
            contact=contact, requested_by_kind=actor.kind, requested_by_id=str(actor.id)[:64]
        )
        audit_record(actor=actor, action="export.request", obj=bundle, changes={"contact": contact.pk})
        transaction.on_commit(lambda: tasks.export_build.delay(str(bundle.pk)), robust=True)
    return bundle


# A pending bundle older than this has lost its build job (the broker was down when it was
# requested, a Redis restart without persistence dropped the queue, a worker died with it):
# export_sweep queues it again. Longer than export_build's hard time limit (900 s); a build in
# progress holds its bundle's row lock, which the sweep skips.
EXPORT_REQUEUE_AFTER = dt.timedelta(minutes=20)
# Still pending this long after the request: its build keeps failing. Failed, so the caller
# sees it and asks again, and the retention purge removes it a day later.
EXPORT_GIVE_UP_AFTER = dt.timedelta(days=1)
EXPORT_GAVE_UP = "The export could not be built; request a new one."


def export_sweep(*, actor: Actor) -> dict[str, int]:
    """Queue the build again of pending bundles whose job was lost; fail those pending for a
    day. Safe to run twice at once (SKIP LOCKED; export_build leaves a built bundle alone)."""
    from compliance import tasks

    now = timezone.now()
    with transaction.atomic():
        stale = list(
            ExportBundle.objects.select_for_update(skip_locked=True)
            .filter(status=ExportBundle.Status.PENDING, requested_at__lt=now - EXPORT_REQUEUE_AFTER)
            .order_by("requested_at")
            .values_list("pk", "requested_at")
        )
        given_up = [pk for pk, requested_at in stale if requested_at < now - EXPORT_GIVE_UP_AFTER]
        requeue = [str(pk) for pk, requested_at in stale if requested_at >= now - EXPORT_GIVE_UP_AFTER]
        if given_up:
            ExportBundle.objects.filter(pk__in=given_up).update(
                status=ExportBundle.Status.FAILED, error=EXPORT_GAVE_UP, completed_at=now
            )
            for bundle in ExportBundle.objects.filter(pk__in=given_up):
                audit_record(actor=actor, action="export.fail", obj=bundle, changes={"error": EXPORT_GAVE_UP})
            logger.warning("%d export bundle(s) still pending after a day were failed", len(given_up))
        for bundle_id in requeue:
            transaction.on_commit(lambda bundle_id=bundle_id: tasks.export_build.delay(bundle_id), robust=True)
    if requeue:
        logger.warning("%d export bundle(s) had lost their build job; queued again", len(requeue))
    return {"requeued": len(requeue), "failed": len(given_up)}


def export_collect(*, contact_ids: list[int]) -> dict[str, list[dict[str, Any]]]:
    """Every registered row about these contacts, table by table (the contacts themselves first)."""
    subject = subject_model()
    tables: dict[str, list[dict[str, Any]]] = {
        subject.model_label: list(_contact_model()._base_manager.filter(pk__in=contact_ids).order_by("pk").values())
    }
    for data in subject_data():
        if data.export is False:
            continue
        if callable(data.export):
            rows = data.export(contact_ids=contact_ids)
        else:
            model = apps.get_model(data.model_label)
            rows = list(model._base_manager.filter(**{f"{data.contact_path}__in": contact_ids}).order_by("pk").values())
        if rows:
            tables[data.model_label] = rows
    return tables


def export_build(*, bundle_id: str, actor: Actor) -> ExportBundle:
    """Build a pending bundle: the JSON of every table plus a CSV per table, zipped and
    encrypted. Idempotent (a built bundle is left alone)."""
    with transaction.atomic():
        bundle = ExportBundle.objects.select_for_update().filter(pk=bundle_id).first()
        if bundle is None or bundle.status != ExportBundle.Status.PENDING:
            return bundle
        if bundle.contact_id is None:  # erased before the job ran: nothing to export
            bundle.status, bundle.error = ExportBundle.Status.FAILED, "The contact no longer exists."
            bundle.save(update_fields=["status", "error"])
            return bundle
        group = _merge_group(_contact_model(), bundle.contact, subject_model().merged_into)
        tables = export_collect(contact_ids=group)
        archive = _zip(tables, contact_id=bundle.contact_id)
        bundle.ciphertext = encrypt(archive).encode("ascii")
        bundle.size = len(archive)
        bundle.tables = {label: len(rows) for label, rows in tables.items()}
        bundle.status = ExportBundle.Status.READY
        bundle.completed_at = timezone.now()
        bundle.expires_at = bundle.completed_at + export_ttl()
        bundle.save()
        audit_record(
            actor=actor, action="export.build", obj=bundle, changes={"tables": len(tables), "bytes": len(archive)}
        )
    return bundle


def _zip(tables: dict[str, list[dict[str, Any]]], *, contact_id: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        document = {"contact": contact_id, "generated_at": timezone.now().isoformat(), "tables": tables}
        archive.writestr("export.json", json.dumps(document, cls=DjangoJSONEncoder, indent=2))
        for label, rows in tables.items():
            out = io.StringIO()
            columns = list(dict.fromkeys(key for row in rows for key in row))
            writer = csv.DictWriter(out, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(v) for k, v in row.items()})
            archive.writestr(f"{label}.csv", out.getvalue())
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        value = json.dumps(value, cls=DjangoJSONEncoder)
    # Spreadsheets run text starting with these as formulas (OWASP CSV injection).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_token(bundle: ExportBundle) -> str:
    """The signed, expiring download token of a ready bundle."""
    return signing.TimestampSigner(salt=_EXPORT_SALT).sign(str(bundle.pk))


class ExportLinkError(Exception):
    def __init__(self, message: str, *, status: int):
        super().__init__(message)
        self.message, self.status = message, status


# A ready bundle no configured key opens (its key left FIELD_ENCRYPTION_KEYS, or the ciphertext
# is damaged): no download ever will. Failed, so the retention purge removes it.
EXPORT_UNREADABLE = "This export can no longer be read; request a new one."


def export_open(*, token: str, actor: Actor) -> tuple[ExportBundle, bytes]:
    """The decrypted zip of the bundle a download token names. ExportLinkError: 404 for a
    forged token or a purged bundle, 410 for an expired link or a bundle no key opens any more
    (marked failed, logged once), 409 while it is still building."""
    try:
        bundle_id = signing.TimestampSigner(salt=_EXPORT_SALT).unsign(token, max_age=export_ttl())
    except signing.SignatureExpired:
        raise ExportLinkError("This download link has expired; request a new export.", status=410) from None
    except signing.BadSignature:
        raise ExportLinkError("No such export.", status=404) from None
    bundle = ExportBundle.objects.filter(pk=bundle_id).first()
    if bundle is None:
        raise ExportLinkError("No such export (expired bundles are purged).", status=404)
    if bundle.error == EXPORT_UNREADABLE:  # found unreadable by an earlier download: gone, as then
        raise ExportLinkError(EXPORT_UNREADABLE, status=410)
    if bundle.status != ExportBundle.Status.READY or bundle.ciphertext is None:
        raise ExportLinkError(f"The export is {bundle.status}.", status=409)
    if bundle.expires_at and bundle.expires_at <= timezone.now():
        raise ExportLinkError("This export has expired; request a new one.", status=410)
    try:
        data = decrypt_bytes(bytes(bundle.ciphertext))
    except DecryptionError:
        _export_unreadable(bundle, actor=actor)
        raise ExportLinkError(EXPORT_UNREADABLE, status=410) from None
    with transaction.atomic():
        ExportBundle.objects.filter(pk=bundle.pk).update(downloads=models.F("downloads") + 1)
        audit_record(actor=actor, action="export.download", obj=bundle, changes={"bytes": len(data)})
    return bundle, data


def _export_unreadable(bundle: ExportBundle, *, actor: Actor) -> None:
    """Mark a ready bundle that no key opens failed, audited and logged (its id, never the
    link's token) by the one download that finds it so."""
    with transaction.atomic():
        failed = ExportBundle.objects.filter(pk=bundle.pk, status=ExportBundle.Status.READY).update(
            status=ExportBundle.Status.FAILED, error=EXPORT_UNREADABLE
        )
        if failed:
            audit_record(actor=actor, action="export.unreadable", obj=bundle)
    if failed:
        logger.warning(
            "Export bundle %s can no longer be decrypted (its key left FIELD_ENCRYPTION_KEYS, or it is damaged); "
            "marked failed.",
            bundle.pk,
        )
