"""PHI text and the order items encrypted at rest (compliance/fields.py): the columns become
text, then the plaintext already in them is encrypted in batches under the current key.
Activity.properties stays jsonb on purpose (see compliance/README.md, "Field encryption")."""

from django.db import migrations

import compliance.fields

ENCRYPT, DECRYPT = compliance.fields.encrypt_existing(
    ("contacts_note", "body"),
    ("contacts_ticket", "body"),
    ("contacts_order", "items"),
    ("contacts_subscription", "plan"),
)


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0002_list_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="note",
            name="body",
            field=compliance.fields.EncryptedTextField(),
        ),
        migrations.AlterField(
            model_name="order",
            name="items",
            field=compliance.fields.EncryptedJSONField(blank=True, default=list),
        ),
        migrations.AlterField(
            model_name="subscription",
            name="plan",
            field=compliance.fields.EncryptedCharField(max_length=100),
        ),
        migrations.AlterField(
            model_name="ticket",
            name="body",
            field=compliance.fields.EncryptedTextField(blank=True),
        ),
        migrations.RunPython(ENCRYPT, DECRYPT, elidable=False),
    ]
