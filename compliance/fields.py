"""Model fields that keep their value encrypted at rest (compliance/crypto.py).

The column holds a Fernet token as text; Python code sees the plaintext (`from_db_value` opens
the token, `get_db_prep_value` seals it), so services, serializers, forms and the admin use
these fields as they would a TextField, CharField or JSONField. What cannot work on a token is
refused loudly rather than answered wrongly: every lookup except `__isnull` raises FieldError
(a token is random, so `body="x"` or `body__icontains` could only ever match nothing). Where
equality lookup is needed, put an `HmacField` beside the encrypted one and filter on it.

Ordering or grouping by an encrypted column is meaningless (it orders tokens); nothing should.
`QuerySet.update(field=value)` stays correct (it passes through get_db_prep_save), but an
update bypasses `HmacField.pre_save`, so a companion hash is kept in step only by `save()`.

`manage.py rotate_encryption_keys` finds every field of these classes (`EncryptedFieldMixin`)
on every model and re-encrypts it under the current key.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.core.exceptions import FieldError
from django.db import models

from compliance import crypto


class EncryptedFieldMixin:
    """Shared by every encrypted field: a text column of tokens, no lookups but isnull."""

    encrypted = True

    def db_type(self, connection):
        return "text"

    def cast_db_type(self, connection):
        return "text"

    def _to_plaintext(self, value) -> str:
        return value

    def _from_plaintext(self, text: str):
        return text

    def get_db_prep_value(self, value, connection, prepared=False):
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            return None
        return crypto.encrypt(self._to_plaintext(value))

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return self._from_plaintext(crypto.decrypt(value))

    def _refuse(self, what: str):
        raise FieldError(
            f"{self.model._meta.label}.{self.name} is encrypted at rest: it supports only __isnull, not "
            f"{what} (filter on an HMAC column beside it, or compare in Python after loading)."
        )

    def get_lookup(self, lookup_name):
        if lookup_name == "isnull":
            return super().get_lookup(lookup_name)
        self._refuse(f"__{lookup_name}")

    def get_transform(self, lookup_name):
        self._refuse(f"__{lookup_name}")


class EncryptedTextField(EncryptedFieldMixin, models.TextField):
    """A TextField stored as a Fernet token (note and ticket bodies)."""

    description = "Text (encrypted at rest)"


class EncryptedCharField(EncryptedFieldMixin, models.CharField):
    """A CharField stored as a Fernet token in a text column; max_length bounds the plaintext
    (forms, serializers and model validation check it as for any CharField)."""

    description = "String (encrypted at rest)"


class EncryptedJSONField(EncryptedFieldMixin, models.JSONField):
    """A JSONField stored as a Fernet token of its JSON text: no key or containment lookups."""

    description = "A JSON object (encrypted at rest)"

    def _to_plaintext(self, value) -> str:
        return json.dumps(value, cls=self.encoder)

    def _from_plaintext(self, text: str):
        return json.loads(text, cls=self.decoder)

    def get_db_prep_save(self, value, connection):
        # JSONField maps Value(None, JSONField()) to JSON null; here None is SQL NULL and the
        # rest goes through get_db_prep_value (encrypted).
        if value is None:
            return None
        return self.get_db_prep_value(value, connection, prepared=False)


class HmacField(models.CharField):
    """The keyed hash (crypto.hmac_digest) of another field's normalised value, recomputed on
    every save, for equality lookups on a value that is stored encrypted:
    `Model.objects.filter(email_hmac=Model._meta.get_field("email_hmac").digest(raw))`.

    `normalize` (a module-level function, so migrations can reference it) makes equal values
    hash equal (lowercase an email, E.164 a phone). Empty and NULL sources hash to NULL.
    """

    description = "HMAC-SHA256 of another field (hex)"

    def __init__(self, *args, source: str = "", normalize: Callable[[str], str] | None = None, **kwargs):
        self.source, self.normalize = source, normalize
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("editable", False)
        kwargs.setdefault("null", True)
        kwargs.setdefault("blank", True)
        kwargs.setdefault("db_index", True)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs["source"] = self.source
        if self.normalize is not None:
            kwargs["normalize"] = self.normalize
        return name, path, args, kwargs

    def digest(self, value) -> str | None:
        """The hash a stored row has for the source value `value` (None for empty)."""
        if value is None:
            return None
        text = self.normalize(str(value)) if self.normalize else str(value)
        return crypto.hmac_digest(text) if text else None

    def pre_save(self, model_instance, add):
        value = self.digest(getattr(model_instance, self.source))
        setattr(model_instance, self.attname, value)
        return value


def encrypted_fields(model) -> list[models.Field]:
    """The concrete encrypted fields of `model` (what rotation and checks walk)."""
    return [f for f in model._meta.concrete_fields if isinstance(f, EncryptedFieldMixin)]


# -- data migrations --------------------------------------------------------------------------


def _opens(value: str) -> bool:
    try:
        crypto.decrypt_bytes(value)
    except crypto.DecryptionError:
        return False
    return True


def _is_token(value: str) -> bool:
    # The shape test is cheap; a value of that shape is a token only if a key opens it (a note
    # could, in theory, start with "gAAAAA").
    return crypto.looks_encrypted(value) and _opens(value)


def _rewrite_column(connection, table: str, column: str, change, batch_size: int) -> int:
    """Apply `change(text) -> text | None` (None: leave as is) to every non-NULL value of
    `table.column`, by keyset pagination on `id`, one UPDATE per batch. Returns rows changed."""
    qn = connection.ops.quote_name
    select = (
        f"SELECT id, {qn(column)} FROM {qn(table)} "  # noqa: S608 - quoted identifiers of our own models
        f"WHERE id > %s AND {qn(column)} IS NOT NULL ORDER BY id LIMIT %s"
    )
    update = (
        f"UPDATE {qn(table)} AS t SET {qn(column)} = v.value "  # noqa: S608 - quoted identifiers of our own models
        f"FROM unnest(%s::bigint[], %s::text[]) AS v(id, value) WHERE t.id = v.id"
    )
    after, changed = 0, 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute(select, [after, batch_size])
            rows = cursor.fetchall()
            if not rows:
                return changed
            after = rows[-1][0]
            ids, values = [], []
            for pk, value in rows:
                new = change(value)
                if new is not None:
                    ids.append(pk)
                    values.append(new)
            if ids:
                cursor.execute(update, [ids, values])
                changed += len(ids)


def encrypt_existing(*columns: tuple[str, str], batch_size: int = 2000):
    """A RunPython pair (forward, reverse) for a migration that has just turned `columns`
    ((table, column) pairs) into encrypted fields: forward encrypts the plaintext left in them
    (values already tokens are skipped, so a re-run after an interruption resumes), reverse
    decrypts them back to plaintext before the column type is altered back."""

    def forward(apps, schema_editor):
        for table, column in columns:
            _rewrite_column(
                schema_editor.connection,
                table,
                column,
                lambda v: None if _is_token(v) else crypto.encrypt(v),
                batch_size,
            )

    def reverse(apps, schema_editor):
        for table, column in columns:
            _rewrite_column(
                schema_editor.connection,
                table,
                column,
                lambda v: crypto.decrypt(v) if _is_token(v) else None,
                batch_size,
            )

    return forward, reverse
