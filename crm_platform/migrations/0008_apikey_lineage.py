"""ApiKey.lineage: the first key of a rotation chain, so a client's Idempotency-Keys, inbound
events and rate limits carry over to its rotated key. Rotated keys made before are filled in
by walking their chains (a handful of rows)."""

from django.db import migrations, models


def fill_lineage(apps, schema_editor):
    ApiKey = apps.get_model("crm_platform", "ApiKey")
    parents = dict(ApiKey.objects.filter(rotated_from__isnull=False).values_list("pk", "rotated_from_id"))
    for pk in parents:
        root, seen = parents[pk], {pk}
        while root in parents and root not in seen:
            seen.add(root)
            root = parents[root]
        ApiKey.objects.filter(pk=pk).update(lineage=root)


class Migration(migrations.Migration):
    dependencies = [("crm_platform", "0007_idempotency_encrypted")]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="lineage",
            field=models.BigIntegerField(
                blank=True,
                editable=False,
                help_text="The first key of this key's rotation chain (empty: this key). The keys of one chain are "
                "one client: they share Idempotency-Keys, inbound events and rate limits.",
                null=True,
            ),
        ),
        migrations.RunPython(fill_lineage, migrations.RunPython.noop),
    ]
