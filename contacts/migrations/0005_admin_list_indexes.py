"""Indexes for the admin's lists of contacts and activities.

The filtered-list indexes of contacts (stage, tier, owner, source) no longer leave archived
contacts out: the admin lists them too, and a value few contacts have was found by reading the
table newest first. The new ones are built before the old ones are dropped, so the API's
filtered lists always have one. Also: archived contacts, the sort by lead score, and the
activities' timeline of everyone (their default order, date filters and sort).

Built and dropped concurrently: both tables take writes throughout. If a concurrent build fails,
PostgreSQL leaves an invalid index behind: drop it (DROP INDEX CONCURRENTLY <name>) and migrate
again."""

from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("contacts", "0004_merged_contact_identity"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="contact",
            index=models.Index(fields=["lifecycle_stage", "-id"], name="contact_by_stage_idx"),
        ),
        AddIndexConcurrently(
            model_name="contact",
            index=models.Index(fields=["engagement_tier", "-id"], name="contact_by_tier_idx"),
        ),
        AddIndexConcurrently(
            model_name="contact",
            index=models.Index(fields=["owner", "-id"], name="contact_by_owner_idx"),
        ),
        AddIndexConcurrently(
            model_name="contact",
            index=models.Index(fields=["source", "-id"], name="contact_by_source_idx"),
        ),
        RemoveIndexConcurrently(model_name="contact", name="contact_stage_idx"),
        RemoveIndexConcurrently(model_name="contact", name="contact_tier_idx"),
        RemoveIndexConcurrently(model_name="contact", name="contact_owner_idx"),
        RemoveIndexConcurrently(model_name="contact", name="contact_source_idx"),
        AddIndexConcurrently(
            model_name="contact",
            index=models.Index(condition=models.Q(("is_archived", True)), fields=["-id"], name="contact_archived_idx"),
        ),
        AddIndexConcurrently(
            model_name="contact",
            index=models.Index(fields=["lead_score"], name="contact_lead_score_idx"),
        ),
        AddIndexConcurrently(
            model_name="activity",
            index=models.Index(fields=["-occurred_at", "-id"], name="activity_latest_idx"),
        ),
    ]
