import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from compliance.models import AuditEvent
from contacts.models import Company, Note, Ticket
from crm_platform.demo import TEAM
from crm_platform.models import ApiKey
from integrations import demo as integrations_demo
from integrations.models import InboundEvent, SyncEvent, WebhookEndpoint
from leads.demo import DOMAIN as LEADS_DOMAIN

pytestmark = pytest.mark.django_db

# Admin pages seed_demo leaves empty, and why: making their rows would be artificial. A page
# registered later needs demo data (an app's demo.py) or a line here.
EMPTY_AFTER_SEED = {
    "axes.AccessAttempt": "login attempts: made by logging in",
    "axes.AccessFailureLog": "login attempts: made by logging in",
    "axes.AccessLog": "login attempts: made by logging in",
    "compliance.AdminNotice": "posted by the system when something needs staff; none in a healthy install",
    "compliance.BreakGlassGrant": "emergency access to medical fields: a real security event each",
    "compliance.Consent": "decisions people make themselves; a seed would fake a legal record",
    "compliance.Erasure": "GDPR requests: made by people asking",
    "compliance.ExportBundle": "GDPR requests: made by people asking",
    "compliance.LegalHold": "placed by counsel",
    "compliance.ProcessingRestriction": "GDPR requests: made by people asking",
    "compliance.Suppression": "made by erasures and unsubscribes",
    "contacts.CustomFieldDefinition": "staff's own configuration; no service writes it",
    "django_celery_beat.ClockedSchedule": "setup_periodic_tasks' business (make run), not the seed's",
    "django_celery_beat.CrontabSchedule": "setup_periodic_tasks' business (make run), not the seed's",
    "django_celery_beat.IntervalSchedule": "setup_periodic_tasks' business (make run), not the seed's",
    "django_celery_beat.PeriodicTask": "setup_periodic_tasks' business (make run), not the seed's",
    "django_celery_beat.SolarSchedule": "setup_periodic_tasks' business (make run), not the seed's",
    "integrations.WebhookDelivery": "a real HTTP attempt each; the demo endpoint is disabled",
    "otp_totp.TOTPDevice": "staff enrol their own authenticator",
}


@pytest.fixture
def as_in_development(settings):
    """Webhook URLs as `make run` checks them (DEBUG: private targets allowed, no lookup), and
    no real DNS should a lookup happen."""
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_RESOLVER = "tests.fakes.dns.resolve"


def _admin_counts() -> dict[str, int]:
    return {model._meta.label: model._default_manager.count() for model in admin.site._registry}


def test_seed_demo_loads_once(capsys, as_in_development):
    call_command("seed_demo")
    User = get_user_model()
    assert User.objects.filter(username__in=[row[0] for row in TEAM], is_staff=True).count() == len(TEAM)
    coach = User.objects.get(username="chris.coach")
    assert list(coach.groups.values_list("name", flat=True)) == ["Coach"]
    assert not coach.has_usable_password()
    first = _admin_counts()
    call_command("seed_demo")
    assert User.objects.filter(username__in=[row[0] for row in TEAM]).count() == len(TEAM)
    out = capsys.readouterr().out
    assert "0 staff user(s)" in out
    assert "demo companies already loaded" in out
    assert "demo app events already loaded; demo webhook endpoint already there" in out
    assert _admin_counts() == first


def test_seed_demo_fills_every_admin_page_but_the_listed_ones(as_in_development):
    call_command("seed_demo")
    counts = _admin_counts()
    assert {label for label, n in counts.items() if n == 0} == set(EMPTY_AFTER_SEED)
    assert Company.objects.filter(contacts__isnull=False).distinct().count() == Company.objects.count()
    assert Ticket.objects.filter(status=Ticket.Status.RESOLVED).exists() and Note.objects.exists()
    assert Ticket.objects.filter(contact__email__endswith=f"@{LEADS_DOMAIN}").exists()  # from app events


def test_seed_demo_applies_its_app_events_without_a_worker(as_in_development):
    call_command("seed_demo")
    key = ApiKey.objects.get(name=integrations_demo.APP_KEY_NAME)
    inbox = InboundEvent.objects.filter(owner=f"key:{key.pk}")
    assert inbox.filter(status=InboundEvent.Status.APPLIED).count() >= 40
    assert not inbox.filter(status=InboundEvent.Status.PENDING).exists()
    assert list(inbox.filter(status=InboundEvent.Status.FAILED).values_list("type", flat=True)) == ["order_placed"]
    assert (
        SyncEvent.objects.filter(direction="inbound", status="applied").count()
        == inbox.filter(status=InboundEvent.Status.APPLIED).count()
    )
    assert SyncEvent.objects.filter(event_type="food_logged", status="failed").exists()  # refused at the door
    endpoint = WebhookEndpoint.objects.get(url=integrations_demo.ENDPOINT_URL)
    assert not endpoint.enabled and not endpoint.deliveries.exists()


def test_seed_demo_skips_the_endpoint_when_its_host_does_not_resolve(settings, capsys):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False  # production: the host is looked up
    settings.WEBHOOK_RESOLVER = "tests.fakes.dns.resolve"  # which resolves no made-up name
    call_command("seed_demo")
    assert "demo webhook endpoint not made (The host does not resolve.)" in capsys.readouterr().out
    assert not WebhookEndpoint.objects.exists()
    assert InboundEvent.objects.filter(status=InboundEvent.Status.APPLIED).exists()


def test_ensure_admin_prints_a_login_that_works(client, monkeypatch, capsys):
    monkeypatch.setenv("ADMIN_PASSWORD", "correct-horse-battery-staple")
    call_command("ensure_admin")
    assert "admin / correct-horse-battery-staple" in capsys.readouterr().out
    assert client.login(username="admin", password="correct-horse-battery-staple")
    assert client.get("/admin/").status_code == 200


@pytest.mark.parametrize("weak", ["admin", "password1234", "12345678901234"])
def test_ensure_admin_refuses_a_password_the_admin_itself_would_refuse(monkeypatch, weak):
    """ADMIN_PASSWORD=admin made a superuser admin/admin: the password validators were skipped."""
    monkeypatch.setenv("ADMIN_PASSWORD", weak)
    with pytest.raises(CommandError, match="ADMIN_PASSWORD is refused"):
        call_command("ensure_admin")
    assert not get_user_model().objects.filter(username="admin").exists()


def test_ensure_admin_generates_and_keeps_a_password(client, monkeypatch, capsys, settings, tmp_path):
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    settings.BASE_DIR = tmp_path
    call_command("ensure_admin")
    first = capsys.readouterr().out.strip().rsplit(" ", 1)[1]
    call_command("ensure_admin")
    assert capsys.readouterr().out.strip().rsplit(" ", 1)[1] == first
    assert (tmp_path / ".data" / "admin_password").stat().st_mode & 0o777 == 0o600
    assert client.login(username="admin", password=first)


def test_ensure_admin_leaves_a_password_changed_in_the_admin_alone(client, monkeypatch, capsys):
    """Every `make run` set the admin's password back to ADMIN_PASSWORD: one changed in the admin
    was silently undone, and the old one printed as the login."""
    monkeypatch.setenv("ADMIN_PASSWORD", "correct-horse-battery-staple")
    call_command("ensure_admin")
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("changed-in-the-admin-0815")
    admin.save()
    capsys.readouterr()
    call_command("ensure_admin")
    out = capsys.readouterr().out
    assert "correct-horse-battery-staple" not in out
    assert out.strip() == (
        "Admin login: admin (password unchanged, as last set for it; "
        "`manage.py ensure_admin --reset-password` sets it to ADMIN_PASSWORD)"
    )
    assert client.login(username="admin", password="changed-in-the-admin-0815")
    assert not AuditEvent.objects.filter(action="staff.password_reset").exists()


def test_ensure_admin_prints_the_unchanged_password_while_it_still_logs_in(monkeypatch, capsys):
    monkeypatch.setenv("ADMIN_PASSWORD", "correct-horse-battery-staple")
    call_command("ensure_admin")
    call_command("ensure_admin")
    assert capsys.readouterr().out.splitlines()[-1] == "Admin login: admin / correct-horse-battery-staple"
    assert AuditEvent.objects.filter(action__startswith="staff.").count() == 1  # the creation only


@pytest.mark.parametrize("account", ["added by an Administrator", "deactivated by a superuser"])
def test_ensure_admin_keeps_only_an_active_superusers_password(client, monkeypatch, capsys, account):
    """An account named `admin` that is no active superuser was made one with the password it
    had: an Administrator (add_user, not a superuser) who added `admin` with a password of
    their choosing held every permission after the next `make run`; an admin account a
    superuser deactivated (its password leaked) came back with that password."""
    from django.contrib.auth.models import Group

    monkeypatch.setenv("ADMIN_PASSWORD", "correct-horse-battery-staple")
    User = get_user_model()
    chosen = "chosen-by-someone-4711"
    if account == "added by an Administrator":
        boss = User.objects.create_user(username="boss", password="a-long-test-password", is_staff=True)
        boss.groups.add(Group.objects.get(name="Administrator"))
        client.force_login(boss)
        added = client.post(
            "/admin/auth/user/add/",
            {
                "username": "admin",
                "usable_password": "true",
                "password1": chosen,
                "password2": chosen,
                "staff_profile-TOTAL_FORMS": "0",
                "staff_profile-INITIAL_FORMS": "0",
            },
        )
        assert added.status_code == 302, added.content[:2000]
        client.logout()
    else:
        call_command("ensure_admin")
        User.objects.filter(username="admin").update(is_active=False)
        admin = User.objects.get(username="admin")
        admin.set_password(chosen)
        admin.save()
    capsys.readouterr()
    call_command("ensure_admin")
    assert capsys.readouterr().out.strip() == "Admin login: admin / correct-horse-battery-staple"
    assert not client.login(username="admin", password=chosen)
    assert client.login(username="admin", password="correct-horse-battery-staple")


@pytest.mark.django_db(transaction=True)
def test_two_ensure_admin_runs_at_once_both_end_with_the_login(monkeypatch):
    """Two `make run`s at once, no admin yet: both found none and both inserted one; the second
    insert failed on the unique username with an IntegrityError traceback. Each run here is held
    (pre_save of the new account) until the other has found no admin too."""
    import io
    import threading

    from django.db.models.signals import pre_save

    from tests.support import race

    monkeypatch.setenv("ADMIN_PASSWORD", "correct-horse-battery-staple")
    User = get_user_model()
    both_read = threading.Barrier(2, timeout=20)

    def hold_the_insert(sender, instance, **kwargs):
        if instance._state.adding and instance.username == "admin":
            both_read.wait()

    def run(n):
        out = io.StringIO()
        call_command("ensure_admin", stdout=out)
        return out.getvalue().strip()

    pre_save.connect(hold_the_insert, sender=User)
    try:
        outs = race(2, run)
    finally:
        pre_save.disconnect(hold_the_insert, sender=User)
    assert outs == ["Admin login: admin / correct-horse-battery-staple"] * 2
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("correct-horse-battery-staple")
    assert AuditEvent.objects.filter(action="staff.create").count() == 1


def test_ensure_admin_reset_password_sets_admin_password_again(client, monkeypatch, capsys):
    monkeypatch.setenv("ADMIN_PASSWORD", "correct-horse-battery-staple")
    call_command("ensure_admin")
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("changed-in-the-admin-0815")
    admin.save()
    call_command("ensure_admin", "--reset-password")
    assert capsys.readouterr().out.splitlines()[-1] == "Admin login: admin / correct-horse-battery-staple"
    assert client.login(username="admin", password="correct-horse-battery-staple")
    event = AuditEvent.objects.get(action="staff.password_reset")
    assert "correct-horse-battery-staple" not in str(event.changes)


def test_ensure_admin_reset_password_still_refuses_a_weak_password(monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "correct-horse-battery-staple")
    call_command("ensure_admin")
    monkeypatch.setenv("ADMIN_PASSWORD", "password1234")
    with pytest.raises(CommandError, match="ADMIN_PASSWORD is refused"):
        call_command("ensure_admin", "--reset-password")
    assert get_user_model().objects.get(username="admin").check_password("correct-horse-battery-staple")


def test_generate_data_adds_filler_keys_with_progress(capsys):
    call_command("generate_data", "--api-keys", "2500")
    assert ApiKey.objects.count() == 2500
    assert "2,500/2,500 (100%)" in capsys.readouterr().out
