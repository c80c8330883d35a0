"""Indexes for the audit log's admin page (and the audit API's filter by action): its date
filters and sort by time (a B-tree on occurred_at, which takes the BRIN's place: with only a
BRIN the planner guessed from old statistics that "today" held no rows, and sorted all of
today's rows to show 50), its filter by action, and its search by request id (a hash index).

Built and dropped concurrently: the log takes writes throughout. If a concurrent build fails,
PostgreSQL leaves an invalid index behind: drop it (DROP INDEX CONCURRENTLY <name>) and migrate
again."""

import django.contrib.postgres.indexes
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("compliance", "0007_exportbundle_ciphertext"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="auditevent",
            index=models.Index(fields=["occurred_at"], name="audit_occurred_idx"),
        ),
        RemoveIndexConcurrently(
            model_name="auditevent",
            name="audit_occurred_brin",
        ),
        AddIndexConcurrently(
            model_name="auditevent",
            index=models.Index(fields=["action", "-id"], name="audit_action_idx"),
        ),
        AddIndexConcurrently(
            model_name="auditevent",
            index=django.contrib.postgres.indexes.HashIndex(fields=["request_id"], name="audit_request_hash"),
        ),
    ]
