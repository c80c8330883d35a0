"""A lead's assessment and persona and a deal's plan encrypted at rest (compliance/fields.py):
the columns become text, then the plaintext already in them is encrypted in batches."""

from django.db import migrations

import compliance.fields

ENCRYPT, DECRYPT = compliance.fields.encrypt_existing(
    ("leads_lead", "assessment"),
    ("leads_lead", "persona"),
    ("leads_deal", "plan"),
)


class Migration(migrations.Migration):
    dependencies = [
        ("leads", "0003_stage_rollup"),
    ]

    operations = [
        migrations.AlterField(
            model_name="deal",
            name="plan",
            field=compliance.fields.EncryptedCharField(
                blank=True,
                help_text="When the deal carries a plan, winning it starts that subscription.",
                max_length=100,
            ),
        ),
        migrations.AlterField(
            model_name="lead",
            name="assessment",
            field=compliance.fields.EncryptedJSONField(
                blank=True, default=dict, help_text="Assessment results (medical: PHI)."
            ),
        ),
        migrations.AlterField(
            model_name="lead",
            name="persona",
            field=compliance.fields.EncryptedCharField(blank=True, max_length=100),
        ),
        migrations.RunPython(ENCRYPT, DECRYPT, elidable=False),
    ]
