"""Applied inbox rows keep no names: the applier now clears an applied row's email and app user
id with its payload, so GDPR erasure need only find queued and failed rows (by their partial
indexes) instead of reading the whole inbox. This clears the rows applied before, walking the
table by id (the primary key's index), 10,000 ids a transaction: the inbox takes writes
throughout, and a failed or interrupted run can simply run again. 0009 then indexes whatever
still names someone (rows that workers of the previous version apply meanwhile).

Every applied row is rewritten once: on a big inbox, let autovacuum catch up (or run VACUUM
integrations_inboundevent) afterwards."""

from django.db import migrations, models

BATCH = 10_000
CLEAR = """
UPDATE integrations_inboundevent SET user_email = '', user_external_id = ''
WHERE id > %s AND id <= %s AND status = 'applied' AND (user_email <> '' OR user_external_id <> '')
"""


def clear_names(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT min(id), max(id) FROM integrations_inboundevent")
        low, high = cursor.fetchone()
        if low is None:
            return
        for start in range(low - 1, high, BATCH):
            cursor.execute(CLEAR, [start, start + BATCH])


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
        migrations.RunPython(clear_names, migrations.RunPython.noop, elidable=True),
    ]
