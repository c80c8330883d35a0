"""Rules staff manage in the admin (pipelines, stages, automations, assignment and scoring
rules, CLV settings): saved with their checks and an audit row, in one transaction."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models, transaction

from compliance.services import audit_record
from crm_platform.actor import Actor
from leads.models import ClvSettings, StageAutomation


def config_save(*, instance: models.Model, actor: Actor, changed: Iterable[str] = ()) -> models.Model:
    """Validate (full_clean: ValidationError with field errors) and save a rule row, auditing
    which fields changed."""
    creating = instance._state.adding
    instance.full_clean()
    with transaction.atomic():
        instance.save()
        label = instance._meta.model_name
        changes = {name: getattr(instance, name, None) for name in changed if not name.startswith("_")}
        audit_record(actor=actor, action=f"{label}.{'create' if creating else 'update'}", obj=instance, changes=changes)
    return instance


def config_delete(*, instance: models.Model, actor: Actor) -> None:
    with transaction.atomic():
        audit_record(actor=actor, action=f"{instance._meta.model_name}.delete", obj=instance)
        instance.delete()


def stage_automations_set_enabled(*, automations: Iterable[StageAutomation], enabled: bool, actor: Actor) -> int:
    """Switch automations on or off; returns how many changed."""
    changed = 0
    with transaction.atomic():
        for automation in (
            StageAutomation.objects.select_for_update()
            .filter(pk__in=[a.pk for a in automations])
            .exclude(enabled=enabled)
        ):
            automation.enabled = enabled
            automation.save(update_fields=["enabled"])
            audit_record(
                actor=actor,
                action="stageautomation.update",
                obj=automation,
                changes={"enabled": (not enabled, enabled)},
            )
            changed += 1
    return changed


def clv_settings_get() -> ClvSettings:
    """The one settings row (made by the data migration; recreated with defaults if deleted)."""
    settings, _ = ClvSettings.objects.get_or_create(id=1)
    return settings
