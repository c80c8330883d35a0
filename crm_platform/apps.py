from django.apps import AppConfig


class CrmPlatformConfig(AppConfig):
    name = "crm_platform"
    verbose_name = "Platform"

    def ready(self):
        from django.db.models.signals import post_migrate

        from crm_platform.defaults import defaults_sync

        def sync_after_last_app(sender, apps=None, **kwargs):
            # Django creates each app's permissions on that app's post_migrate; after the last
            # app's, every permission a role names exists.
            from django.apps import apps as registry

            if sender is list(registry.get_app_configs())[-1]:
                defaults_sync()

        # A bridge to Django's own permission creation, which also runs on post_migrate.
        post_migrate.connect(sync_after_last_app, dispatch_uid="crm_platform.defaults_sync", weak=False)

        from compliance.registry import PII, register_personal_fields

        # Staff accounts hold personal data too.
        register_personal_fields("auth.User", {"username": PII, "email": PII, "first_name": PII, "last_name": PII})

        # Retention (settings.RETENTION_DAYS; the nightly compliance.retention_purge job) of
        # Idempotency-Key records. Outbox rows are purged by integrations' relay (its apps.py).
        from compliance.retention import register_retention

        register_retention("crm_platform.idempotencyrecord", date_field="created_at")
