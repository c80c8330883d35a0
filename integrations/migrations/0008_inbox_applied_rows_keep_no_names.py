"""Applied inbox rows keep no names: the applier now clears an applied row's email and app user
id with its payload, so GDPR erasure need only find queued and failed rows (by their partial
indexes) instead of reading the whole inbox.

A partial index holds the applied rows that still name their user (built concurrently: the
inbox takes writes throughout); this clears the rows applied before, 10,000 a transaction,
found through it. Rows that workers of the previous version apply after this ran stay in that
index, where erasure finds them. If the concurrent build fails, PostgreSQL leaves an invalid
index behind: drop it (DROP INDEX CONCURRENTLY inbound_event_named_idx) and migrate
again."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

BATCH = 10_000
CLEAR = """
UPDATE integrations_inboundevent SET user_email = '', user_external_id = ''
WHERE id IN (
    SELECT id FROM integrations_inboundevent
    WHERE status = 'applied' AND (NOT user_email = '' OR NOT user_external_id = '')
    LIMIT %s
)
"""


def clear_names(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        while True:
            cursor.execute(CLEAR, [BATCH])
            if cursor.rowcount < BATCH:
                return


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("integrations", "0007_sync_event_digest_hash")]

    operations = [
        migrations.AlterField(
            model_name="inboundevent",
            name="user_email",
            field=models.CharField(blank=True, help_text="Cleared once applied.", max_length=254),
        ),
        migrations.AlterField(
            model_name="inboundevent",
            name="user_external_id",
            field=models.CharField(blank=True, help_text="Cleared once applied.", max_length=128),
        ),
        AddIndexConcurrently(
            model_name="inboundevent",
            index=models.Index(
                condition=models.Q(("status", "applied"))
                & (models.Q(("user_email", ""), _negated=True) | models.Q(("user_external_id", ""), _negated=True)),
                fields=["id"],
                name="inbound_event_named_idx",
            ),
        ),
        migrations.RunPython(clear_names, migrations.RunPython.noop, elidable=True),
    ]
