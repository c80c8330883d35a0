"""A merged-away contact may hold no identifier: contact_merge moves an email or app user id the
survivor lacks over to it (else the person's own email could never be captured again: the
survivor cannot take an identifier the merged-away row still holds). contact_has_identity now
also accepts merged (and archived) contacts.

The check is only relaxed, so every row already satisfies it: it is added NOT VALID (a moment's
lock) and validated on its own, which reads the table without blocking writes. Then the
contacts merged before this change give their identifiers to their survivors the same way, so
those people can be captured again too (each identifier to the survivor at the end of its merge
chain, when it lacks one; the lowest id first when several merged-away rows hold one).

Reversing it restores the strict check, which fails while a contact without identifier exists."""

from django.db import migrations, models

STRICT = '("email" IS NOT NULL OR "external_id" IS NOT NULL)'
RELAXED = '("email" IS NOT NULL OR "external_id" IS NOT NULL OR "merged_into_id" IS NOT NULL OR "is_archived")'


def _replace_check(condition: str) -> str:
    return (
        "ALTER TABLE contacts_contact DROP CONSTRAINT contact_has_identity, "
        f"ADD CONSTRAINT contact_has_identity CHECK {condition} NOT VALID"
    )


VALIDATE = "ALTER TABLE contacts_contact VALIDATE CONSTRAINT contact_has_identity"


def give_identifiers_to_survivors(apps, schema_editor):
    Contact = apps.get_model("contacts", "Contact")
    merged = (
        Contact.objects.filter(merged_into__isnull=False)
        .exclude(email__isnull=True, external_id__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for pk in list(merged):
        loser = Contact.objects.get(pk=pk)
        survivor, seen = loser, {loser.pk}
        while survivor.merged_into_id and survivor.merged_into_id not in seen:
            survivor = Contact.objects.get(pk=survivor.merged_into_id)
            seen.add(survivor.pk)
        if survivor.merged_into_id:  # a cycle: no survivor to give them to
            continue
        moved = {
            f: getattr(loser, f) for f in ("email", "external_id") if getattr(loser, f) and not getattr(survivor, f)
        }
        if moved:
            # The loser first: the unique indexes check each statement.
            Contact.objects.filter(pk=loser.pk).update(**dict.fromkeys(moved))
            Contact.objects.filter(pk=survivor.pk).update(**moved)


class Migration(migrations.Migration):
    atomic = False  # VALIDATE in its own transaction, after the lock of the ALTER is released

    dependencies = [
        ("contacts", "0003_encrypt_phi"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="contact", name="contact_has_identity"),
                migrations.AddConstraint(
                    model_name="contact",
                    constraint=models.CheckConstraint(
                        condition=models.Q(email__isnull=False)
                        | models.Q(external_id__isnull=False)
                        | models.Q(merged_into__isnull=False)
                        | models.Q(is_archived=True),
                        name="contact_has_identity",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(_replace_check(RELAXED), reverse_sql=VALIDATE),
                migrations.RunSQL(VALIDATE, reverse_sql=_replace_check(STRICT)),
            ],
        ),
        migrations.RunPython(give_identifiers_to_survivors, migrations.RunPython.noop, atomic=True),
    ]
