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


# A group a superuser made by hand, holding permissions no role gives the Administrator.
@pytest.fixture
def offboarding_group():
    from django.contrib.auth.models import Permission

    group = Group.objects.create(name="Offboarding")
    group.permissions.add(Permission.objects.get(content_type__app_label="auth", codename="delete_user"))
    return group


@pytest.mark.parametrize("target", ["themselves", "another user"])
def test_an_administrator_cannot_grant_a_group_holding_permissions_they_lack(
    client, administrator, django_user_model, offboarding_group, target
):
    """The Administrator (change_user, not a superuser) could put anyone, themselves included,
    in any group, and so hold any permission a superuser had put in one."""
    user = administrator
    if target == "another user":
        user = django_user_model.objects.create_user(username="seller", password="a-long-test-password", is_staff=True)
    groups = [*user.groups.values_list("pk", flat=True), offboarding_group.pk]
    response = client.post(f"/admin/auth/user/{user.pk}/change/", _change_data(client, user, groups=groups))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["groups"]
    assert errors == [
        "You can grant only groups whose permissions you hold yourself; a superuser can grant “Offboarding” "
        "(you lack auth.delete_user)."
    ]
    assert not user.groups.filter(pk=offboarding_group.pk).exists()


def test_an_administrator_still_takes_a_role_away(client, administrator, django_user_model):
    seller = django_user_model.objects.create_user(username="seller", password="a-long-test-password", is_staff=True)
    seller.groups.add(Group.objects.get(name="Sales"))
    response = client.post(f"/admin/auth/user/{seller.pk}/change/", _change_data(client, seller, groups=[]))
    assert response.status_code == 302
    assert not seller.groups.exists()


def test_an_administrator_cannot_take_over_an_account_holding_permissions_they_lack(
    client, administrator, django_user_model, offboarding_group
):
    """Setting the password (or editing the account) of someone who holds more is holding it
    oneself: only a superuser, or someone holding all of it, may."""
    holder = django_user_model.objects.create_user(username="holder", password="a-long-test-password", is_staff=True)
    holder.groups.add(offboarding_group)
    password = client.post(
        f"/admin/auth/user/{holder.pk}/password/",
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    change = client.post(f"/admin/auth/user/{holder.pk}/change/", _change_data(client, holder, email="x@example.com"))
    assert (password.status_code, change.status_code) == (403, 403)
    holder.refresh_from_db()
    assert holder.check_password("a-long-test-password") and holder.email == ""
    page = client.get(f"/admin/auth/user/{holder.pk}/change/")
    assert "Only a superuser can change this account" in page.content.decode()


def test_an_inactive_account_is_judged_by_the_permissions_its_groups_give(
    client, administrator, django_user_model, offboarding_group
):
    """Django reports no permissions for an inactive user: reactivating one with a password of
    one's choosing would otherwise hand over everything its groups hold."""
    holder = django_user_model.objects.create_user(
        username="holder", password="a-long-test-password", is_staff=True, is_active=False
    )
    holder.groups.add(offboarding_group)
    response = client.post(
        f"/admin/auth/user/{holder.pk}/password/",
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert response.status_code == 403


@pytest.mark.parametrize("how", ["delete page", "bulk action"])
def test_a_staff_user_who_may_delete_users_cannot_delete_a_superuser(client, django_user_model, offboarding_group, how):
    """Deleting is the last word in editing: a superuser's account is for superusers only."""
    from django.contrib.auth.models import Permission

    offboarder = django_user_model.objects.create_user(username="off", password="a-long-test-password", is_staff=True)
    offboarder.groups.add(Group.objects.get(name="Administrator"), offboarding_group)
    offboarder.user_permissions.add(Permission.objects.get(codename="delete_user"))
    client.force_login(offboarder)
    root = django_user_model.objects.create_superuser(username="root", password="a-long-test-password")
    if how == "delete page":
        response = client.post(f"/admin/auth/user/{root.pk}/delete/", {"post": "yes"})
    else:
        response = client.post(
            "/admin/auth/user/", {"action": "delete_selected", "_selected_action": [root.pk], "post": "yes"}
        )
    assert response.status_code == 403
    assert django_user_model.objects.filter(pk=root.pk).exists()


def test_an_administrator_cannot_change_a_superusers_account(client, administrator, django_user_model):
    root = django_user_model.objects.create_superuser(username="root", password="a-long-test-password")
    data = _change_data(client, root, email="mine@example.com", groups=[])
    data["is_superuser"] = "on"
    response = client.post(f"/admin/auth/user/{root.pk}/change/", data)
    assert response.status_code == 403
    root.refresh_from_db()
    assert root.email != "mine@example.com"


def test_an_administrator_cannot_give_single_permissions(client, administrator, django_user_model):
    from django.contrib.auth.models import Permission

    seller = django_user_model.objects.create_user(username="seller", password="a-long-test-password", is_staff=True)
    delete_user = Permission.objects.get(codename="delete_user")
    response = client.post(
        f"/admin/auth/user/{seller.pk}/change/", _change_data(client, seller, user_permissions=[delete_user.pk])
    )
    assert response.status_code == 302
    assert not seller.user_permissions.exists()


def test_a_superuser_grants_any_group(admin_client, django_user_model, offboarding_group):
    seller = django_user_model.objects.create_user(username="seller", password="a-long-test-password", is_staff=True)
    response = admin_client.post(
        f"/admin/auth/user/{seller.pk}/change/", _change_data(admin_client, seller, groups=[offboarding_group.pk])
    )
    assert response.status_code == 302
    assert list(seller.groups.all()) == [offboarding_group]


def test_a_staff_user_who_may_change_groups_cannot_add_a_permission_they_lack(client, administrator):
    """change_group (no role has it; a superuser may hand it out) let its holder put any
    permission in a group they belong to."""
    from django.contrib.auth.models import Permission

    administrator.user_permissions.add(Permission.objects.get(codename="change_group"))
    group = Group.objects.get(name="Administrator")
    held = list(group.permissions.values_list("pk", flat=True))
    delete_user = Permission.objects.get(codename="delete_user")
    response = client.post(
        f"/admin/auth/group/{group.pk}/change/", {"name": group.name, "permissions": [*held, delete_user.pk]}
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["permissions"] == [
        "You can grant only permissions you hold yourself; a superuser can grant auth.delete_user."
    ]
    assert not group.permissions.filter(pk=delete_user.pk).exists()


def test_a_change_to_a_groups_permissions_is_audited(client, administrator):
    """Who put which permissions in a role is what an escalation review asks: the group admin,
    taken over to guard grants, wrote no audit row (the user admin writes one per change)."""
    from django.contrib.auth.models import Permission

    administrator.user_permissions.add(Permission.objects.get(codename="change_group"))
    group = Group.objects.get(name="Sales")
    held = Permission.objects.get(content_type__app_label="auth", codename="view_user")
    response = client.post(f"/admin/auth/group/{group.pk}/change/", {"name": group.name, "permissions": [held.pk]})
    assert response.status_code == 302, response.content[:2000]
    row = AuditEvent.objects.get(object_type="auth.group", object_id=str(group.pk), action="admin.update")
    assert row.actor_id == str(administrator.pk) and "permissions" in row.changes
