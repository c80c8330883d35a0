"""Ticket.external_id: the app's id for a ticket (support_ticket_created's `ticket_id`), unique
per contact, so the same ticket sent twice (under two Idempotency-Keys or event ids) is one.

The column is new and empty (adding a nullable column is a moment's lock); its partial unique
index is built concurrently, as the table takes writes throughout. If the build fails,
PostgreSQL leaves an invalid index behind: drop it (DROP INDEX CONCURRENTLY
ticket_contact_external_id_uniq) and migrate again."""

from django.db import migrations, models

CREATE = (
    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ticket_contact_external_id_uniq "
    "ON contacts_ticket (contact_id, external_id) WHERE external_id IS NOT NULL"
)
DROP = "DROP INDEX CONCURRENTLY IF EXISTS ticket_contact_external_id_uniq"


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY runs outside a transaction

    dependencies = [
        ("contacts", "0005_admin_list_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="ticket",
            name="external_id",
            field=models.CharField(blank=True, editable=False, max_length=128, null=True),
        ),
        # Django builds a conditional UniqueConstraint as this very index (same name), so the
        # state below and the database agree.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddConstraint(
                    model_name="ticket",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(external_id__isnull=False),
                        fields=("contact", "external_id"),
                        name="ticket_contact_external_id_uniq",
                    ),
                ),
            ],
            database_operations=[migrations.RunSQL(CREATE, reverse_sql=DROP)],
        ),
    ]
