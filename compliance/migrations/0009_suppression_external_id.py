"""Suppression of app user ids: erasure adds the person's, so the app's next event naming them by id
alone does not make them again (a sign-up, account_created, lifts it)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0008_audit_admin_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="suppression",
            name="kind",
            field=models.CharField(
                choices=[("email", "Email"), ("phone", "Phone"), ("external_id", "app user id")], max_length=12
            ),
        ),
    ]
