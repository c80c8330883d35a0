from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0006_audit_guard_fast"),
    ]

    operations = [
        migrations.RenameField(model_name="exportbundle", old_name="data", new_name="ciphertext"),
    ]
