"""Pipeline stats per currency: a deal's amount is added only to amounts in its own currency.

The rollup (0003) summed every deal of a stage into one amount, EUR and USD alike. Its rows are
now per (pipeline, stage, currency): deals under their own currency, the moves out of a stage
(which have none) under "". The triggers are replaced by ones that key on the currency too, and
the rollup is recomputed from the deals and their history in the same transaction (dropping the
old triggers locks both tables against writes until it commits, so nothing is missed). Each
pipeline gets the currency its headline amounts are reported in (USD, a deal's own default)."""

import django.core.validators
from django.db import migrations, models

# As 0003's, with the currency in the key. `{deltas}` are rows (pipeline, stage, currency,
# deals, amount, moves out, days summed, days counted); upserts go in key order, so concurrent
# statements lock rollup rows in the same order and cannot deadlock on them.
UPSERT = """
    INSERT INTO leads_stagerollup AS r (pipeline_id, stage_id, currency, deals, amount, moves_out, days_sum, days_count)
    SELECT p, s, cur, sum(c), sum(a), sum(m), sum(d), sum(dc) FROM ({deltas}) AS deltas (p, s, cur, c, a, m, d, dc)
    GROUP BY p, s, cur ORDER BY p, s, cur
    ON CONFLICT (pipeline_id, stage_id, currency) DO UPDATE SET
        deals = r.deals + EXCLUDED.deals, amount = r.amount + EXCLUDED.amount,
        moves_out = r.moves_out + EXCLUDED.moves_out, days_sum = r.days_sum + EXCLUDED.days_sum,
        days_count = r.days_count + EXCLUDED.days_count;
"""
DEAL_ROWS = "SELECT pipeline_id, stage_id, currency, {sign}1, {sign}amount, 0, 0, 0 FROM {table}"
MOVE_ROWS = (
    "SELECT st.pipeline_id, c.from_stage_id, ''::varchar, 0, 0, {sign}1,"
    " {sign}coalesce(c.days_in_previous_stage::numeric, 0), {sign}(c.days_in_previous_stage IS NOT NULL)::int"
    " FROM {table} c JOIN leads_stage st ON st.id = c.from_stage_id"
)
DEAL_CHANGED = (
    "SELECT o.pipeline_id, o.stage_id, o.currency, -1, -o.amount, 0, 0, 0 FROM old_rows o JOIN new_rows n ON n.id = o.id"
    " WHERE (o.pipeline_id, o.stage_id, o.amount, o.currency) IS DISTINCT FROM (n.pipeline_id, n.stage_id, n.amount, n.currency)"
    " UNION ALL "
    "SELECT n.pipeline_id, n.stage_id, n.currency, 1, n.amount, 0, 0, 0 FROM old_rows o JOIN new_rows n ON n.id = o.id"
    " WHERE (o.pipeline_id, o.stage_id, o.amount, o.currency) IS DISTINCT FROM (n.pipeline_id, n.stage_id, n.amount, n.currency)"
)

# 0003's own, to migrate back.
OLD_UPSERT = """
    INSERT INTO leads_stagerollup AS r (pipeline_id, stage_id, deals, amount, moves_out, days_sum, days_count)
    SELECT p, s, sum(c), sum(a), sum(m), sum(d), sum(dc) FROM ({deltas}) AS deltas (p, s, c, a, m, d, dc)
    GROUP BY p, s ORDER BY p, s
    ON CONFLICT (pipeline_id, stage_id) DO UPDATE SET
        deals = r.deals + EXCLUDED.deals, amount = r.amount + EXCLUDED.amount,
        moves_out = r.moves_out + EXCLUDED.moves_out, days_sum = r.days_sum + EXCLUDED.days_sum,
        days_count = r.days_count + EXCLUDED.days_count;
"""
OLD_DEAL_ROWS = "SELECT pipeline_id, stage_id, {sign}1, {sign}amount, 0, 0, 0 FROM {table}"
OLD_MOVE_ROWS = (
    "SELECT st.pipeline_id, c.from_stage_id, 0, 0, {sign}1,"
    " {sign}coalesce(c.days_in_previous_stage::numeric, 0), {sign}(c.days_in_previous_stage IS NOT NULL)::int"
    " FROM {table} c JOIN leads_stage st ON st.id = c.from_stage_id"
)
OLD_DEAL_CHANGED = (
    "SELECT o.pipeline_id, o.stage_id, -1, -o.amount, 0, 0, 0 FROM old_rows o JOIN new_rows n ON n.id = o.id"
    " WHERE (o.pipeline_id, o.stage_id, o.amount) IS DISTINCT FROM (n.pipeline_id, n.stage_id, n.amount)"
    " UNION ALL "
    "SELECT n.pipeline_id, n.stage_id, 1, n.amount, 0, 0, 0 FROM old_rows o JOIN new_rows n ON n.id = o.id"
    " WHERE (o.pipeline_id, o.stage_id, o.amount) IS DISTINCT FROM (n.pipeline_id, n.stage_id, n.amount)"
)


DROP = """
DROP TRIGGER leads_deal_rollup_ins ON leads_deal;
DROP TRIGGER leads_deal_rollup_upd ON leads_deal;
DROP TRIGGER leads_deal_rollup_del ON leads_deal;
DROP TRIGGER leads_dealstagechange_rollup_ins ON leads_dealstagechange;
DROP TRIGGER leads_dealstagechange_rollup_upd ON leads_dealstagechange;
DROP TRIGGER leads_dealstagechange_rollup_del ON leads_dealstagechange;
DROP FUNCTION leads_deal_rollup();
DROP FUNCTION leads_dealstagechange_rollup();
"""
CLEAR = "DELETE FROM leads_stagerollup;"


def _function(name: str, upsert: str, insert: str, delete: str, update: str) -> str:
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    IF TG_OP = 'INSERT' THEN {upsert.format(deltas=insert)}
    ELSIF TG_OP = 'DELETE' THEN {upsert.format(deltas=delete)}
    ELSE {upsert.format(deltas=update)}
    END IF;
    RETURN NULL;
END
$body$;
"""


def _triggers(table: str, function: str) -> str:
    return f"""
CREATE TRIGGER {table}_rollup_ins AFTER INSERT ON {table}
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}();
CREATE TRIGGER {table}_rollup_upd AFTER UPDATE ON {table}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}();
CREATE TRIGGER {table}_rollup_del AFTER DELETE ON {table}
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}();
"""


def _rollup(upsert: str, deal_rows: str, move_rows: str, deal_changed: str) -> str:
    """The trigger functions and triggers, then the rollup recomputed from a full scan."""
    return (
        _function(
            "leads_deal_rollup",
            upsert,
            deal_rows.format(sign="", table="new_rows"),
            deal_rows.format(sign="-", table="old_rows"),
            deal_changed,
        )
        + _function(
            "leads_dealstagechange_rollup",
            upsert,
            move_rows.format(sign="", table="new_rows"),
            move_rows.format(sign="-", table="old_rows"),
            move_rows.format(sign="-", table="old_rows") + " UNION ALL " + move_rows.format(sign="", table="new_rows"),
        )
        + _triggers("leads_deal", "leads_deal_rollup")
        + _triggers("leads_dealstagechange", "leads_dealstagechange_rollup")
        + CLEAR
        + upsert.format(
            deltas=deal_rows.format(sign="", table="leads_deal")
            + " UNION ALL "
            + move_rows.format(sign="", table="leads_dealstagechange")
        )
    )


class Migration(migrations.Migration):
    dependencies = [
        ("leads", "0005_deal_admin_indexes"),
    ]

    operations = [
        # Back: the old triggers, and the rollup refilled without currencies (their column is
        # gone by then).
        migrations.RunSQL(DROP, _rollup(OLD_UPSERT, OLD_DEAL_ROWS, OLD_MOVE_ROWS, OLD_DEAL_CHANGED)),
        migrations.RemoveConstraint(model_name="stagerollup", name="stage_rollup_key"),
        migrations.AddField(
            model_name="pipeline",
            name="currency",
            field=models.CharField(
                default="USD",
                help_text="The currency of the stats' headline amounts: deals in other currencies are reported "
                "beside them, per currency, never added in.",
                max_length=3,
                validators=[
                    django.core.validators.RegexValidator(
                        "\\A[A-Z]{3}\\Z", "A three-letter ISO 4217 code, in capitals."
                    )
                ],
            ),
        ),
        migrations.AddField(
            model_name="stagerollup",
            name="currency",
            field=models.CharField(blank=True, default="", max_length=3),
        ),
        migrations.AddConstraint(
            model_name="stagerollup",
            constraint=models.UniqueConstraint(fields=("pipeline_id", "stage_id", "currency"), name="stage_rollup_key"),
        ),
        # Back: rows of one currency each would collide under the old key; the refill above
        # recomputes them.
        migrations.RunSQL(_rollup(UPSERT, DEAL_ROWS, MOVE_ROWS, DEAL_CHANGED), DROP + CLEAR),
    ]
