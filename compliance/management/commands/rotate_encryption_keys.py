"""`manage.py rotate_encryption_keys`: re-encrypt every encrypted field under the current key.

Procedure: put the new key first in FIELD_ENCRYPTION_KEYS, keeping the old ones after it, and
restart (every process now writes with the new key and still reads the old); run this command;
when it reports nothing left on an old key (`--dry-run` counts), drop the old keys.

Every model's encrypted fields are found by their class (compliance.fields.EncryptedFieldMixin),
so a new one is rotated without touching this command. Rows are read by keyset pagination on
the primary key, raw tokens only (no plaintext is built beyond MultiFernet.rotate), and written
back per batch in one UPDATE that only replaces a token still equal to the one read: a row that
the application rewrote meanwhile already carries the current key and is left alone. Tokens
already on the current key are skipped, so an interrupted run simply runs again (or resumes
from `--model` / `--after`, the last position it printed).
"""

from __future__ import annotations

import time

from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from compliance import crypto
from compliance.fields import encrypted_fields
from compliance.services import audit_record
from crm_platform.actor import Actor


class Command(BaseCommand):
    help = "Re-encrypt every encrypted model field with the current (first) key of FIELD_ENCRYPTION_KEYS."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=2000, help="Rows per read and UPDATE (default 2000).")
        parser.add_argument(
            "--dry-run", action="store_true", help="Count tokens not on the current key; change nothing."
        )
        parser.add_argument("--model", help="Only this model (app_label.ModelName), e.g. to resume.")
        parser.add_argument("--after", default=None, help="With --model: start after this primary key (resume).")

    def handle(self, *args, batch_size, dry_run, model, after, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if after is not None and not model:
            raise CommandError("--after needs --model (a primary key means nothing across tables).")
        targets = [(m, encrypted_fields(m)) for m in apps.get_models() if encrypted_fields(m)]
        if model:
            targets = [(m, f) for m, f in targets if m._meta.label_lower == model.lower()]
            if not targets:
                raise CommandError(f"{model} is not a model with encrypted fields.")
            if after is not None:
                pk = targets[0][0]._meta.pk
                try:  # as the SQL casts it; a value that cannot be one was a DataError traceback
                    after = pk.get_db_prep_value(pk.to_python(after), connection)
                except (ValidationError, ValueError, TypeError):
                    raise CommandError(f"--after {after!r} is not a primary key of {model}.") from None
        total_stale = total_failed = 0
        for model_class, fields in targets:
            stale, failed = self._model(model_class, fields, batch_size=batch_size, dry_run=dry_run, after=after)
            total_stale += stale
            total_failed += failed
        verb = "on an old key" if dry_run else "re-encrypted"
        self.stdout.write(f"done: {total_stale:,} token(s) {verb}; {total_failed:,} unreadable.")
        if not dry_run:  # every encrypted column was rewritten: on the record, counts only
            audit_record(
                actor=Actor.system("manage.py rotate_encryption_keys"),
                action="encryption.rotate",
                object_type="compliance.encryption",
                changes={"re_encrypted": total_stale, "unreadable": total_failed, "model": model or "all"},
            )
        if total_failed:
            # A token no configured key opens: a dropped key or corruption. Rotation cannot fix it.
            raise CommandError(f"{total_failed:,} token(s) open with no configured key (see the lines above).")

    def _model(self, model, fields, *, batch_size, dry_run, after) -> tuple[int, int]:
        qn = connection.ops.quote_name
        table, pk = model._meta.db_table, model._meta.pk
        pk_col, pk_type = qn(pk.column), pk.db_type(connection)
        columns = [f.column for f in fields]
        select = (
            f"SELECT {pk_col}, {', '.join(qn(c) for c in columns)} FROM {qn(table)} "  # noqa: S608 - our own identifiers
            f"WHERE %s::{pk_type} IS NULL OR {pk_col} > %s::{pk_type} ORDER BY {pk_col} LIMIT %s"
        )
        label = model._meta.label
        scanned = stale = failed = 0
        started = time.monotonic()
        position = after
        while True:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(select, [position, position, batch_size])
                    rows = cursor.fetchall()
                if not rows:
                    break
                position = rows[-1][0]
                scanned += len(rows)
                changes: dict[str, tuple[list, list, list]] = {c: ([], [], []) for c in columns}
                for row in rows:
                    for column, token in zip(columns, row[1:], strict=True):
                        if token is None or crypto.is_current(token):
                            continue
                        try:
                            new = crypto.rotate(token)
                        except crypto.DecryptionError:
                            failed += 1
                            self.stderr.write(f"{label} {pk.name}={row[0]} {column}: no configured key opens it")
                            continue
                        stale += 1
                        ids, old, fresh = changes[column]
                        ids.append(row[0])
                        old.append(token)
                        fresh.append(new)
                if not dry_run:
                    self._write(table, pk_col, pk_type, changes)
            elapsed = time.monotonic() - started
            self.stdout.write(
                f"{label}: {scanned:,} rows scanned, {stale:,} token(s) "
                f"{'on an old key' if dry_run else 're-encrypted'}, last {pk.name}={position} "
                f"({scanned / elapsed if elapsed else 0:,.0f} rows/s)"
            )
        outcome = "stale" if dry_run else "rotated"
        self.stdout.write(f"{label}: {scanned:,} rows, {stale:,} {outcome}, {failed} unreadable")
        return stale, failed

    @staticmethod
    def _write(table, pk_col, pk_type, changes) -> None:
        qn = connection.ops.quote_name
        with connection.cursor() as cursor:
            for column, (ids, old, fresh) in changes.items():
                if not ids:
                    continue
                # Only where the row still holds the token read: a concurrent write is newer
                # and already on the current key.
                cursor.execute(
                    f"UPDATE {qn(table)} AS t SET {qn(column)} = v.new "  # noqa: S608 - our own identifiers
                    f"FROM unnest(%s::{pk_type}[], %s::text[], %s::text[]) AS v(id, old, new) "
                    f"WHERE t.{pk_col} = v.id AND t.{qn(column)} = v.old",
                    [ids, old, fresh],
                )
