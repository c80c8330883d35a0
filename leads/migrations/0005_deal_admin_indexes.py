"""Indexes for the admin's deals: its search by the start of a deal's name, any case (the
lower-cased name with pattern operators, so LIKE 'x%' reads it whatever the collation); its
search by contact, whose deals' ids (contact, id) now gives from the index alone, in place of
the contact foreign key's own index (contact), dropped once the new one is built; and its sorts
by name, amount and close date.

Built concurrently: deals take writes throughout. If a build fails, PostgreSQL leaves an invalid
index behind: drop it (DROP INDEX CONCURRENTLY <name>) and migrate again."""

import django.db.models.deletion
from django.contrib.postgres.indexes import OpClass
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models
from django.db.models.functions import Lower


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("contacts", "0003_encrypt_phi"),
        ("leads", "0004_encrypt_phi"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="deal",
            index=models.Index(fields=["contact", "id"], name="deal_contact_idx"),
        ),
        migrations.AlterField(
            model_name="deal",
            name="contact",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="deals",
                to="contacts.contact",
            ),
        ),
        AddIndexConcurrently(
            model_name="deal",
            index=models.Index(OpClass(Lower("name"), name="varchar_pattern_ops"), name="deal_name_prefix"),
        ),
        AddIndexConcurrently(
            model_name="deal",
            index=models.Index(fields=["name"], name="deal_name_idx"),
        ),
        AddIndexConcurrently(
            model_name="deal",
            index=models.Index(fields=["amount"], name="deal_amount_idx"),
        ),
        AddIndexConcurrently(
            model_name="deal",
            index=models.Index(fields=["close_date"], name="deal_close_date_idx"),
        ),
    ]
