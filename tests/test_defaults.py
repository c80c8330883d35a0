import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

from contacts.models import LifecycleRule, LifecycleSettings
from crm_platform.roles import ROLES
from leads.models import Pipeline, ScoringRule


def _defaults_present() -> bool:
    return (
        Group.objects.filter(name__in=ROLES).count() == len(ROLES)
        and LifecycleRule.objects.filter(event_type="order_placed").exists()
        and LifecycleSettings.objects.filter(id=1).exists()
        and Pipeline.objects.filter(is_default=True, stages__key="closedwon").exists()
        and ScoringRule.objects.exists()
    )


@pytest.mark.django_db(transaction=True)
def test_defaults_come_back_after_a_flush():
    assert _defaults_present()
    call_command("flush", "--noinput", verbosity=0)
    assert _defaults_present()


@pytest.mark.django_db
def test_defaults_never_undo_what_staff_changed():
    from crm_platform.defaults import defaults_sync

    LifecycleRule.objects.filter(event_type="order_placed").update(enabled=False)
    Pipeline.objects.update(name="Clinic sales")
    defaults_sync()
    assert LifecycleRule.objects.get(event_type="order_placed").enabled is False
    assert list(Pipeline.objects.values_list("name", flat=True)) == ["Clinic sales"]
