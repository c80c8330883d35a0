"""API keys through the admin: a non-superuser gives a key only the scopes they hold themselves
(crm_platform.api.scopes.not_grantable), the way they grant only groups they hold
(test_staff_admin_security). A staff user with add_apikey could make a key with `admin` and
`phi:read`, be shown it once, and do through the API what their role does not let them do."""

import re

import pytest
from django.contrib.auth.models import Group, Permission

from crm_platform.models import ApiKey

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/crm_platform/apikey/add/"
LIST_URL = "/admin/crm_platform/apikey/"


def _permissions(*labels):
    found = []
    for label in labels:
        app_label, codename = label.split(".")
        found.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return found


@pytest.fixture
def key_clerk(client, staff_user):
    """A staff user in a custom group that may manage keys and read contacts, nothing else."""
    group = Group.objects.create(name="Key clerks")
    group.permissions.add(
        *_permissions(
            "crm_platform.add_apikey",
            "crm_platform.change_apikey",
            "crm_platform.view_apikey",
            "contacts.view_contact",
        )
    )
    staff_user.groups.add(group)
    client.force_login(staff_user)
    return staff_user


def _errors(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


@pytest.mark.parametrize(
    ("scopes", "said"),
    [
        (["admin"], "“admin” (it grants every scope but phi:read, and you do not hold contacts:write,"),
        (["phi:read"], "“phi:read” (you lack compliance.view_phi)"),
        (["contacts:read", "contacts:write"], "“contacts:write” (you lack contacts.change_contact)"),
        (["coaching:read"], "“coaching:read” (no staff permission stands for it: superusers only)"),
    ],
    ids=["admin", "phi", "contacts-write", "coaching"],
)
def test_a_key_clerk_cannot_make_a_key_with_scopes_they_do_not_hold(client, key_clerk, scopes, said):
    response = client.post(ADD_URL, {"name": "mine", "scopes": scopes})
    assert response.status_code == 200
    text = _errors(response)
    assert "raw-api-key" not in response.content.decode()
    assert "You can give a key only scopes you hold yourself; a superuser can give" in text
    assert said in text
    assert not ApiKey.objects.exists()


def test_a_key_clerk_makes_a_key_with_scopes_they_hold(client, key_clerk):
    response = client.post(ADD_URL, {"name": "reader", "scopes": ["contacts:read"]})
    assert 'id="raw-api-key"' in response.content.decode()
    assert ApiKey.objects.get(name="reader").scopes == ["contacts:read"]


def test_phi_read_is_given_by_whoever_may_see_medical_fields(client, key_clerk):
    key_clerk.groups.first().permissions.add(*_permissions("compliance.view_phi"))
    response = client.post(ADD_URL, {"name": "phi", "scopes": ["phi:read", "contacts:read"]})
    assert 'id="raw-api-key"' in response.content.decode()
    assert ApiKey.objects.get(name="phi").scopes == ["contacts:read", "phi:read"]


def test_the_administrator_role_cannot_make_an_admin_key(client, staff_user):
    staff_user.groups.add(Group.objects.get(name="Administrator"))
    client.force_login(staff_user)
    response = client.post(ADD_URL, {"name": "root", "scopes": ["admin"]})
    assert "a superuser can give “admin”" in _errors(response)
    assert not ApiKey.objects.exists()
    # What the role holds it gives: the audit log (compliance.view_auditevent).
    response = client.post(ADD_URL, {"name": "auditor", "scopes": ["audit:read"]})
    assert ApiKey.objects.get(name="auditor").scopes == ["audit:read"]


def test_a_key_clerk_cannot_add_a_scope_to_a_key(client, key_clerk, make_key):
    key, _ = make_key(["contacts:read"])
    response = client.post(
        f"/admin/crm_platform/apikey/{key.pk}/change/", {"name": key.name, "scopes": ["contacts:read", "admin"]}
    )
    assert response.status_code == 200
    assert "a superuser can give “admin”" in _errors(response)
    key.refresh_from_db()
    assert key.scopes == ["contacts:read"]


def test_a_key_clerk_cannot_change_a_key_holding_more_than_they_do(client, key_clerk, make_key):
    """Lifting a key's IP allowlist or its expiry hands out its scopes as much as adding them."""
    key, _ = make_key(["admin"], allowed_ips=["10.0.0.1"])
    response = client.post(
        f"/admin/crm_platform/apikey/{key.pk}/change/", {"name": key.name, "scopes": ["admin"], "allowed_ips": ""}
    )
    assert response.status_code == 200
    assert "a superuser can give “admin”" in _errors(response)
    key.refresh_from_db()
    assert key.allowed_ips == ["10.0.0.1"]
    # Taking scopes away, down to what the clerk holds, is no grant.
    response = client.post(
        f"/admin/crm_platform/apikey/{key.pk}/change/", {"name": key.name, "scopes": ["contacts:read"]}
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.scopes == ["contacts:read"]


def test_a_key_clerk_cannot_rotate_a_key_holding_more_than_they_do(client, key_clerk, make_key, api_client):
    key, raw = make_key(["admin", "phi:read"])
    response = client.post(LIST_URL, {"action": "rotate_key", "_selected_action": [key.pk]}, follow=True)
    assert "raw-api-key" not in response.content.decode()
    text = _errors(response)
    assert "a superuser can give “admin” (it grants every scope" in text
    assert "“phi:read” (you lack compliance.view_phi)" in text
    key.refresh_from_db()
    assert key.expires_at is None and not ApiKey.objects.filter(rotated_from=key).exists()
    assert api_client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200


def test_a_key_clerk_rotates_a_key_within_their_scopes(client, key_clerk, make_key):
    key, _ = make_key(["contacts:read"])
    response = client.post(LIST_URL, {"action": "rotate_key", "_selected_action": [key.pk]})
    assert 'id="raw-api-key"' in response.content.decode()
    assert ApiKey.objects.filter(rotated_from=key).exists()
