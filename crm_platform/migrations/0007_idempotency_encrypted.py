"""Stored Idempotency-Key responses encrypted at rest (they may copy medical fields: a note's
body, a plan), with what GDPR erasure now finds them by (`subjects`, as the encrypted body cannot
be searched) and whether the caller could read medical fields (`phi_read`: a replay to a caller
who has since lost phi:read is refused).

Existing records get their subjects from their plaintext before it is encrypted. Their phi_read
is not known: an API key's record takes whether the key holds phi:read now; a staff user's is
taken as true (a replay to staff without view PHI is refused, for at most IDEMPOTENCY_TTL_DAYS).

Stop the web processes before migrating: one running the old code would write plaintext into
the column after it is encrypted."""

import json

import django.contrib.postgres.fields
import django.contrib.postgres.indexes
from django.db import migrations, models

import compliance.fields

TABLE = "crm_platform_idempotencyrecord"
ENCRYPT, DECRYPT = compliance.fields.encrypt_existing((TABLE, "response_body"))


def fill_subjects(apps, schema_editor, batch_size=2000):
    from crm_platform.idempotency import response_subjects

    ApiKey = apps.get_model("crm_platform", "ApiKey")
    reading = {f"key:{pk}" for pk, scopes in ApiKey.objects.values_list("pk", "scopes") if "phi:read" in scopes}
    connection = schema_editor.connection
    last = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, owner, response_body FROM {TABLE} WHERE id > %s AND response_body IS NOT NULL "  # noqa: S608
                "ORDER BY id LIMIT %s",
                [last, batch_size],
            )
            rows = cursor.fetchall()
            if not rows:
                return
            document = [
                {"i": pk, "s": response_subjects(json.loads(body)), "p": owner in reading or owner.startswith("user:")}
                for pk, owner, body in rows
            ]
            cursor.execute(
                f"UPDATE {TABLE} AS t SET subjects = u.s, phi_read = u.p "  # noqa: S608
                "FROM jsonb_to_recordset(%s::jsonb) AS u(i bigint, s varchar(64)[], p boolean) WHERE t.id = u.i",
                [json.dumps(document)],
            )
        last = rows[-1][0]


class Migration(migrations.Migration):
    dependencies = [
        ("crm_platform", "0006_outbox_destination_index"),
        # It moved the event routes' records into the inbox, reading their bodies as jsonb.
        ("integrations", "0006_inbox_takes_event_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="idempotencyrecord",
            name="phi_read",
            field=models.BooleanField(default=False, help_text="Stored for a caller who could read medical fields."),
        ),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="subjects",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(max_length=64), blank=True, default=list, size=None
            ),
        ),
        migrations.AlterField(
            model_name="idempotencyrecord",
            name="response_body",
            field=compliance.fields.EncryptedJSONField(blank=True, null=True),
        ),
        migrations.RunPython(fill_subjects, migrations.RunPython.noop, elidable=False),
        migrations.RunPython(ENCRYPT, DECRYPT, elidable=False),
        migrations.AddIndex(
            model_name="idempotencyrecord",
            index=django.contrib.postgres.indexes.GinIndex(fields=["subjects"], name="idempotency_subjects_gin"),
        ),
    ]
