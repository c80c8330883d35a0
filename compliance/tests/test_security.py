"""Staff security through the admin: idle logout, lockout, TOTP in production, CSP."""

import time

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.test import override_settings
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from compliance.security import ADMIN_CSP

pytestmark = pytest.mark.django_db
PASSWORD = "a-long-test-password"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(username="staffer", password=PASSWORD, is_staff=True)


def _login(client, password=PASSWORD, **extra):
    return client.post(LOGIN, {"username": "staffer", "password": password, **extra})


def test_a_session_idle_longer_than_the_limit_is_logged_out(client, staff):
    client.force_login(staff)
    assert client.get("/admin/").status_code == 200
    session = client.session
    session["_idle_last_seen"] = int(time.time()) - 15 * 60 - 5
    session.save()
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert client.get("/admin/").status_code == 302


@override_settings(SESSION_IDLE_TIMEOUT=600)
def test_activity_within_the_limit_keeps_the_session(client, staff):
    client.force_login(staff)
    client.get("/admin/")
    session = client.session
    session["_idle_last_seen"] = int(time.time()) - 590
    session.save()
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/").status_code == 200


def test_the_session_row_is_rewritten_at_most_once_a_minute(client, staff):
    client.force_login(staff)
    client.get("/admin/")
    key = client.session.session_key
    first = Session.objects.get(pk=key).expire_date
    for _ in range(3):
        client.get("/admin/")
    assert Session.objects.get(pk=key).expire_date == first


def test_repeated_failed_logins_lock_the_account_out_even_with_the_right_password(client, staff):
    for _ in range(4):
        assert _login(client, password="wrong-password").status_code == 200
    assert _login(client, password="wrong-password").status_code == 429  # the fifth failure locks
    locked = _login(client)
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_successful_login_before_the_limit_resets_the_count(client, staff):
    for _ in range(4):
        _login(client, password="wrong-password")
    assert _login(client).status_code == 302
    client.logout()
    for _ in range(4):
        _login(client, password="wrong-password")
    assert _login(client).status_code == 302


@override_settings(OTP_REQUIRED_FOR_STAFF=True)
def test_production_mode_requires_a_totp_code_at_the_admin_login(client, staff):
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    page = client.get(LOGIN).content.decode()
    assert 'name="otp_token"' in page and "<style" not in page  # nothing the CSP would refuse
    without = _login(client)
    assert without.status_code == 200 and "_auth_user_id" not in client.session
    ok = _login(client, otp_device=device.persistent_id, otp_token=f"{totp(device.bin_key):06d}")
    assert ok.status_code == 302
    assert client.get("/admin/").status_code == 200


@override_settings(OTP_REQUIRED_FOR_STAFF=True)
def test_a_wrong_totp_code_is_refused(client, staff):
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    wrong = _login(client, otp_device=device.persistent_id, otp_token=f"{(totp(device.bin_key) + 1) % 1_000_000:06d}")
    assert wrong.status_code == 200 and "_auth_user_id" not in client.session


@override_settings(OTP_REQUIRED_FOR_STAFF=True)
def test_production_mode_refuses_staff_sessions_not_verified_by_otp(client, staff):
    client.force_login(staff)
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_development_mode_needs_no_otp(client, staff):
    assert _login(client).status_code == 302
    assert client.get("/admin/").status_code == 200


def test_admin_pages_carry_a_content_security_policy_of_our_own_assets(client, staff):
    page = client.get(LOGIN)
    assert page["Content-Security-Policy"] == ADMIN_CSP
    assert "script-src 'self'" in ADMIN_CSP and "unsafe-inline" not in ADMIN_CSP.split("style-src-attr")[0]
    assert "Content-Security-Policy" not in client.get("/healthz")


def test_the_browsable_api_carries_the_policy_too_and_json_answers_need_none(admin_client):
    """Staff browse the API with their admin session: its HTML pages had no policy at all."""
    page = admin_client.get("/api/v1/contacts", HTTP_ACCEPT="text/html")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    assert page["Content-Security-Policy"] == ADMIN_CSP
    assert b"<script>" not in page.content  # its scripts are our static files (a JSON data block aside)
    data = admin_client.get("/api/v1/contacts", HTTP_ACCEPT="application/json")
    assert data.status_code == 200 and "Content-Security-Policy" not in data


def test_the_admin_cleans_up_expired_login_attempts(admin_client):
    fields = {"user_agent": "curl", "ip_address": "10.0.0.1", "http_accept": "*/*", "path_info": "/admin/login/"}
    expired = AccessAttempt.objects.create(username="old", failures_since_start=5, **fields)
    AccessAttempt.objects.filter(pk=expired.pk).update(attempt_time=timezone.now() - timezone.timedelta(hours=1))
    recent = AccessAttempt.objects.create(username="new", failures_since_start=2, **fields)
    response = admin_client.post(
        "/admin/axes/accessattempt/", {"action": "cleanup_expired_attempts", "_selected_action": [recent.pk]}
    )
    assert response.status_code == 302
    assert list(AccessAttempt.objects.values_list("username", flat=True)) == ["new"]


@override_settings(OTP_REQUIRED_FOR_STAFF=True)
def test_a_staff_session_that_lost_its_otp_device_is_refused_by_the_api_as_by_the_admin(client, staff):
    staff.groups.add(Group.objects.get(name="Sales"))
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    assert _login(client, otp_device=device.persistent_id, otp_token=f"{totp(device.bin_key):06d}").status_code == 302
    assert client.get("/api/v1/contacts").status_code == 200
    device.delete()  # a lost or compromised phone: its device is removed, the session stays
    assert client.get("/admin/").status_code == 302
    assert client.get("/api/v1/contacts").status_code in (401, 403)
