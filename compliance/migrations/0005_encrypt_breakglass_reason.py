"""A break-glass grant's reason (PHI: it may describe the patient) encrypted at rest."""

from django.db import migrations

import compliance.fields

ENCRYPT, DECRYPT = compliance.fields.encrypt_existing(("compliance_breakglassgrant", "reason"))


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0004_privacy"),
    ]

    operations = [
        migrations.AlterField(
            model_name="breakglassgrant",
            name="reason",
            field=compliance.fields.EncryptedTextField(),
        ),
        migrations.RunPython(ENCRYPT, DECRYPT, elidable=False),
    ]
