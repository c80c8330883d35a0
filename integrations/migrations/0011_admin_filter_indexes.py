"""Indexes for the admin's filters of the sync log, newest first: a value few rows have was
found by reading the log newest first, the whole log when none had it. The small index of failed
and dead rows becomes one of every row not applied (pending and skipped ones too), built before
the old one is dropped. Nearly every row is the app's inbound stream, which reading the log
newest first finds at once, so the provider and direction indexes leave it out.

The inbox (integrations_inboundevent) gets none: its rows are written by the accepting request,
the path bench.events holds to its ceiling, and retention keeps only IDEMPOTENCY_TTL_DAYS of them
(7 by default), so a filter by a type or a route few rows have reads a week's inbox at most.

Built and dropped concurrently: the log takes writes throughout. If a concurrent build fails,
PostgreSQL leaves an invalid index behind: drop it (DROP INDEX CONCURRENTLY <name>) and migrate
again."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("integrations", "0010_webhook_secret_rotation"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="syncevent",
            index=models.Index(
                condition=models.Q(("status", "applied"), _negated=True),
                fields=["status", "-id"],
                name="sync_event_unapplied_idx",
            ),
        ),
        RemoveIndexConcurrently(model_name="syncevent", name="sync_event_problem_idx"),
        AddIndexConcurrently(
            model_name="syncevent",
            index=models.Index(fields=["event_type", "-id"], name="sync_event_type_idx"),
        ),
        AddIndexConcurrently(
            model_name="syncevent",
            index=models.Index(
                condition=models.Q(("provider", "app"), _negated=True),
                fields=["provider", "-id"],
                name="sync_event_provider_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="syncevent",
            index=models.Index(
                condition=models.Q(("direction", "outbound")), fields=["-id"], name="sync_event_outbound_idx"
            ),
        ),
    ]
