"""The pipeline stats indexes carry each deal's currency beside its amount.

Filtered pipeline stats (by owner) group a pipeline's deals by stage and currency since 0006;
their indexes held the amount but not the currency, so every deal's row was read from the table
as well (an index scan, no longer index-only). The new indexes hold both. Each replaces one that
also serves a foreign key (deal_pipeline_stage_idx: the pipeline's; deal_owner_idx: the
owner's), so the new ones are built before the old ones are dropped.

Built and dropped concurrently: deals take writes throughout. If a concurrent build fails,
PostgreSQL leaves an invalid index behind: drop it (DROP INDEX CONCURRENTLY <name>) and migrate
again."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("leads", "0006_pipeline_currency_stage_rollup_per_currency"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="deal",
            index=models.Index(
                fields=["pipeline", "stage"], include=("amount", "currency"), name="deal_pipeline_stage_cur_idx"
            ),
        ),
        AddIndexConcurrently(
            model_name="deal",
            index=models.Index(
                fields=["owner", "pipeline", "stage"], include=("amount", "currency"), name="deal_owner_stage_cur_idx"
            ),
        ),
        RemoveIndexConcurrently(model_name="deal", name="deal_pipeline_stage_idx"),
        RemoveIndexConcurrently(model_name="deal", name="deal_owner_idx"),
    ]
