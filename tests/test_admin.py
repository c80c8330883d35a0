import re

import pytest
from django.contrib.auth.models import Group

from compliance.models import AuditEvent
from crm_platform.models import ApiKey
from crm_platform.roles import ROLES
from crm_platform.selectors import hash_key

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/crm_platform/apikey/add/"
LIST_URL = "/admin/crm_platform/apikey/"


def test_roles_exist_with_least_permissions():
    assert set(Group.objects.filter(name__in=ROLES).values_list("name", flat=True)) == set(ROLES)
    admin_perms = set(Group.objects.get(name="Administrator").permissions.values_list("codename", flat=True))
    assert {"add_apikey", "change_apikey", "view_auditevent"} <= admin_perms
    assert "delete_apikey" not in admin_perms
    assert not Group.objects.get(name="Sales").permissions.filter(codename__contains="apikey").exists()


def test_admin_start_page_is_titled_and_links_the_main_areas(admin_client):
    html = admin_client.get("/admin/").content.decode()
    assert "crm_platform · Health CRM" in html
    assert 'id="main-areas"' in html
    for url in (LIST_URL, "/admin/compliance/auditevent/", "/api/docs/"):
        assert f'href="{url}"' in html


def test_admin_shows_the_scope_registry_on_the_key_form(admin_client):
    html = admin_client.get(ADD_URL).content.decode()
    assert "phi:read: see medical fields" in html and "gdpr:write" in html


def test_admin_creates_a_key_and_shows_it_once(admin_client, admin_user):
    response = admin_client.post(ADD_URL, {"name": "partner", "scopes": ["contacts:read", "leads:read"]})
    assert response.status_code == 200
    raw = re.search(r'id="raw-api-key"[^>]*>([^<]+)<', response.content.decode()).group(1)
    key = ApiKey.objects.get(name="partner")
    assert key.hashed_key == hash_key(raw) and key.created_by == admin_user
    assert raw not in admin_client.get(f"/admin/crm_platform/apikey/{key.pk}/change/").content.decode()
    audit = AuditEvent.objects.get(action="api_key.create", object_id=str(key.pk))
    assert (audit.actor_kind, audit.actor_id) == ("user", str(admin_user.pk))


def test_admin_refuses_unknown_scope(admin_client):
    response = admin_client.post(ADD_URL, {"name": "x", "scopes": ["everything"]})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_admin_refuses_bad_ip_without_writing(admin_client):
    response = admin_client.post(ADD_URL, {"name": "x", "scopes": ["contacts:read"], "allowed_ips": "10.0.0.0/8,nope"})
    assert response.status_code == 200
    assert "Not an address or network: nope" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_admin_revoke_action(admin_client, make_key, api_client):
    key, raw = make_key()
    admin_client.post(LIST_URL, {"action": "revoke_keys", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.status == "revoked"
    assert api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_admin_rotate_action_shows_the_new_key(admin_client, make_key, api_client):
    key, _ = make_key()
    response = admin_client.post(LIST_URL, {"action": "rotate_key", "_selected_action": [key.pk]})
    raw = re.search(r'id="raw-api-key"[^>]*>([^<]+)<', response.content.decode()).group(1)
    assert api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    key.refresh_from_db()
    assert key.expires_at is not None and key.rotated_to.hashed_key == hash_key(raw)


def test_keys_cannot_be_deleted_in_the_admin(admin_client, make_key):
    key, _ = make_key()
    assert admin_client.get(f"/admin/crm_platform/apikey/{key.pk}/delete/").status_code == 403


def test_audit_log_is_read_only_in_the_admin(admin_client, make_key):
    make_key()
    event = AuditEvent.objects.first()
    assert admin_client.get("/admin/compliance/auditevent/").status_code == 200
    assert admin_client.post(f"/admin/compliance/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_sales_staff_cannot_manage_keys(client, staff_user):
    staff_user.groups.add(Group.objects.get(name="Sales"))
    client.force_login(staff_user)
    assert client.get(LIST_URL).status_code == 403


def test_admin_edits_scopes_and_the_change_takes_effect(
    admin_client, make_key, api_client, django_capture_on_commit_callbacks
):
    key, raw = make_key(["contacts:read"])
    assert api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").json()["scopes"] == ["contacts:read"]
    with django_capture_on_commit_callbacks(execute=True):  # the cached verification is dropped on commit
        response = admin_client.post(
            f"/admin/crm_platform/apikey/{key.pk}/change/",
            {"name": key.name, "scopes": ["leads:read"], "allowed_ips": ""},
        )
    assert response.status_code == 302
    assert api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").json()["scopes"] == ["leads:read"]
    event = AuditEvent.objects.get(action="api_key.update")
    assert event.changes == {"scopes": {"old": ["contacts:read"], "new": ["leads:read"]}}


def test_staff_profile_is_edited_on_the_user_page_and_audited(admin_client, staff_user, admin_user):
    from crm_platform.models import StaffProfile

    url = f"/admin/auth/user/{staff_user.pk}/change/"
    page = admin_client.get(url)
    assert "CRM profile" in page.content.decode()
    data = {
        "username": staff_user.username,
        "email": staff_user.email,
        "is_active": "on",
        "is_staff": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "staff_profile-TOTAL_FORMS": "1",
        "staff_profile-INITIAL_FORMS": "0",
        "staff_profile-0-manager": admin_user.pk,
        "staff_profile-0-team": "east",
        "staff_profile-0-regions": "NY,NJ",
        "staff_profile-0-sources": "website_form",
        "staff_profile-0-capacity": "40",
        "staff_profile-0-accepts_leads": "on",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    profile = StaffProfile.objects.get(user=staff_user)
    assert (profile.manager, profile.regions, profile.capacity) == (admin_user, ["NY", "NJ"], 40)
    assert AuditEvent.objects.filter(action="admin.create", object_type="crm_platform.staffprofile").exists()


def test_config_changes_in_the_admin_are_audited(admin_client):
    from contacts.models import LifecycleRule

    rule = LifecycleRule.objects.get(event_type="order_placed")
    admin_client.post(
        f"/admin/contacts/lifecyclerule/{rule.pk}/change/",
        {"event_type": "order_placed", "to_stage": "active_customer", "description": "x"},
    )
    rule.refresh_from_db()
    assert rule.enabled is False
    event = AuditEvent.objects.get(action="admin.update", object_id=str(rule.pk))
    assert event.changes["enabled"] == {"old": True, "new": False}


def test_dashboard_renders_svg_charts_for_staff_and_refuses_anonymous(admin_client, client):
    from contacts.tests.factories import ContactFactory

    ContactFactory.create_batch(3, lifecycle_stage="lead")
    html = admin_client.get("/admin/dashboard/").content.decode()
    assert "Contacts by lifecycle stage" in html and "<svg" in html and "Lead: 3" in html
    assert "http" not in html.split("<svg", 1)[1].split("</svg>")[0].replace("http://www.w3.org/2000/svg", "")
    assert client.get("/admin/dashboard/").status_code == 302


@pytest.mark.parametrize("action", ["rotate_key", "revoke_keys"])
def test_a_view_only_role_cannot_rotate_or_revoke_keys(client, staff_user, make_key, api_client, action):
    """The Compliance officer may view API keys (crm_platform.view_apikey), not change them. The
    key actions declared no permission, and Django offers such actions to anyone who may see the
    list: the officer could revoke every key, or rotate one and be shown a working successor
    (same scopes, admin and phi:read included)."""
    key, raw = make_key(["admin", "phi:read"])
    staff_user.groups.add(Group.objects.get(name="Compliance officer"))
    client.force_login(staff_user)
    assert client.get(LIST_URL).status_code == 200  # the officer does see the keys
    response = client.post(LIST_URL, {"action": action, "_selected_action": [key.pk]})
    assert "raw-api-key" not in response.content.decode()
    key.refresh_from_db()
    assert key.status == "active" and key.expires_at is None and not ApiKey.objects.filter(rotated_from=key).exists()
    assert api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
