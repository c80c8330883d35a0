import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from crm_platform.demo import TEAM
from crm_platform.models import ApiKey

pytestmark = pytest.mark.django_db


def test_seed_demo_loads_once(capsys):
    call_command("seed_demo")
    User = get_user_model()
    assert User.objects.filter(username__in=[row[0] for row in TEAM], is_staff=True).count() == len(TEAM)
    coach = User.objects.get(username="chris.coach")
    assert list(coach.groups.values_list("name", flat=True)) == ["Coach"]
    assert not coach.has_usable_password()
    call_command("seed_demo")
    assert User.objects.filter(username__in=[row[0] for row in TEAM]).count() == len(TEAM)
    assert "0 staff user(s)" in capsys.readouterr().out


def test_ensure_admin_prints_a_login_that_works(client, monkeypatch, capsys):
    monkeypatch.setenv("ADMIN_PASSWORD", "correct-horse-battery-staple")
    call_command("ensure_admin")
    assert "admin / correct-horse-battery-staple" in capsys.readouterr().out
    assert client.login(username="admin", password="correct-horse-battery-staple")
    assert client.get("/admin/").status_code == 200


def test_ensure_admin_generates_and_keeps_a_password(client, monkeypatch, capsys, settings, tmp_path):
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    settings.BASE_DIR = tmp_path
    call_command("ensure_admin")
    first = capsys.readouterr().out.strip().rsplit(" ", 1)[1]
    call_command("ensure_admin")
    assert capsys.readouterr().out.strip().rsplit(" ", 1)[1] == first
    assert (tmp_path / ".data" / "admin_password").stat().st_mode & 0o777 == 0o600
    assert client.login(username="admin", password=first)


def test_generate_data_adds_filler_keys_with_progress(capsys):
    call_command("generate_data", "--api-keys", "2500")
    assert ApiKey.objects.count() == 2500
    assert "2,500/2,500 (100%)" in capsys.readouterr().out
