"""Webhook signing secrets encrypted at rest (compliance/fields.py): the column becomes text and
the secrets already there are encrypted in batches under the current key."""

from django.db import migrations

import compliance.fields

ENCRYPT, DECRYPT = compliance.fields.encrypt_existing(("integrations_webhookendpoint", "secret"))


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0002_syncevent"),
    ]

    operations = [
        migrations.AlterField(
            model_name="webhookendpoint",
            name="secret",
            field=compliance.fields.EncryptedCharField(editable=False, max_length=200),
        ),
        migrations.RunPython(ENCRYPT, DECRYPT, elidable=False),
    ]
