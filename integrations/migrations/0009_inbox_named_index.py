"""A partial index of the applied inbox rows that still name their user: normally none (the
applier clears names, and 0008 cleared the older rows), but rows that workers of the previous
version applied during the deploy land here, and GDPR erasure finds them through it. Built
after 0008's clearing, so it starts small; built concurrently, as the inbox takes writes. If
the build fails, PostgreSQL leaves an invalid index behind: drop it (DROP INDEX CONCURRENTLY
inbound_event_named_idx) and migrate again."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("integrations", "0008_inbox_applied_rows_keep_no_names")]

    operations = [
        AddIndexConcurrently(
            model_name="inboundevent",
            index=models.Index(
                condition=models.Q(("status", "applied"))
                & (models.Q(("user_email", ""), _negated=True) | models.Q(("user_external_id", ""), _negated=True)),
                fields=["id"],
                name="inbound_event_named_idx",
            ),
        ),
    ]
