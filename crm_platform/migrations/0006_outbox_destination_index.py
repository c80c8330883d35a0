"""The outbox by destination, newest first: the admin's filter and search by destination, and
its list of destinations (a skip scan of this index instead of a SELECT DISTINCT).

Built concurrently: the outbox takes writes throughout. If the build fails, PostgreSQL leaves an
invalid index behind: drop it (DROP INDEX CONCURRENTLY outbox_destination_idx) and migrate
again."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("crm_platform", "0005_outbox_relay"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="outboxmessage",
            index=models.Index(fields=["destination", "-id"], name="outbox_destination_idx"),
        ),
    ]
