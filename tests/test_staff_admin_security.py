"""The staff user admin (crm_platform.admin.StaffUserAdmin) through the admin: what an
Administrator may do to staff accounts, and what the audit log keeps of it."""

import json

import pytest
from django.contrib.auth.models import Group

from compliance.models import AuditEvent

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "Plaintext-Secret-4711x"


@pytest.fixture
def administrator(client, django_user_model):
    user = django_user_model.objects.create_user(username="boss", password="a-long-test-password", is_staff=True)
    user.groups.add(Group.objects.get(name="Administrator"))
    client.force_login(user)
    return user


def test_adding_a_staff_user_keeps_no_password_in_the_audit_log(client, administrator):
    response = client.post(
        "/admin/auth/user/add/",
        {
            "username": "newhire",
            "usable_password": "true",
            "password1": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
            "staff_profile-TOTAL_FORMS": "0",
            "staff_profile-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    rows = AuditEvent.objects.filter(action__startswith="admin.", object_type="auth.user")
    assert rows.exists()
    for row in rows:
        assert NEW_PASSWORD not in json.dumps(row.changes, default=str)


def _change_data(client, user, **overrides):
    page = client.get(f"/admin/auth/user/{user.pk}/change/")
    assert page.status_code == 200
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": "on",
        "is_staff": "on",
        "groups": [g.pk for g in user.groups.all()],
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "staff_profile-TOTAL_FORMS": "0",
        "staff_profile-INITIAL_FORMS": "0",
        "staff_profile-MIN_NUM_FORMS": "0",
        "staff_profile-MAX_NUM_FORMS": "1",
    }
    data.update(overrides)
    return data


def test_an_administrator_cannot_make_themselves_superuser(client, administrator):
    response = client.post(
        f"/admin/auth/user/{administrator.pk}/change/", _change_data(client, administrator, is_superuser="on")
    )
    assert response.status_code in (200, 302, 403)
    administrator.refresh_from_db()
    assert not administrator.is_superuser


def test_an_administrator_cannot_reset_a_superusers_password(client, administrator, django_user_model):
    root = django_user_model.objects.create_superuser(username="root", password="a-long-test-password")
    page = client.post(
        f"/admin/auth/user/{root.pk}/password/",
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert page.status_code == 403
    root.refresh_from_db()
    assert root.check_password("a-long-test-password")


def test_an_administrator_still_edits_other_staff(client, administrator, django_user_model):
    seller = django_user_model.objects.create_user(username="seller", password="a-long-test-password", is_staff=True)
    sales = Group.objects.get(name="Sales")
    response = client.post(
        f"/admin/auth/user/{seller.pk}/change/", _change_data(client, seller, groups=[sales.pk], email="s@example.com")
    )
    assert response.status_code == 302
    seller.refresh_from_db()
    assert seller.email == "s@example.com" and list(seller.groups.all()) == [sales]


def test_resetting_a_staff_users_password_in_the_admin_is_audited(client, administrator, django_user_model):
    seller = django_user_model.objects.create_user(username="seller", password="a-long-test-password", is_staff=True)
    response = client.post(
        f"/admin/auth/user/{seller.pk}/password/",
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert response.status_code == 302
    seller.refresh_from_db()
    assert seller.check_password(NEW_PASSWORD)
    row = AuditEvent.objects.get(object_type="auth.user", object_id=str(seller.pk), action="admin.password_change")
    assert row.actor_id == str(administrator.pk)
    assert NEW_PASSWORD not in json.dumps(row.changes, default=str)
