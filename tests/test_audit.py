import pytest
from django.db import transaction

from compliance.models import AuditEvent
from compliance.services import audit_record
from crm_platform.actor import Actor, ActorKind

pytestmark = pytest.mark.django_db


def test_audit_row_shares_the_callers_transaction(system_actor, django_user_model):
    user = django_user_model.objects.create_user(username="u1")
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(actor=system_actor, action="thing.happen", obj=user)
        raise RuntimeError("the change fails")
    assert not AuditEvent.objects.filter(action="thing.happen").exists()


def test_audit_row_never_holds_personal_values(django_user_model):
    user = django_user_model.objects.create_user(username="pat", email="pat@example.com")
    actor = Actor(ActorKind.USER, "7", "req-1", "10.0.0.1")
    event = audit_record(
        actor=actor,
        action="staff.update",
        obj=user,
        changes={"email": ("old@example.com", "pat@example.com"), "is_staff": (False, True)},
    )
    event.refresh_from_db()
    assert event.changes == {"email": {"changed": True}, "is_staff": {"old": False, "new": True}}
    assert "example.com" not in str(event.__dict__)
    assert (event.actor_kind, event.actor_id, event.request_id, event.ip) == ("user", "7", "req-1", "10.0.0.1")
    assert (event.object_type, event.object_id) == ("auth.user", str(user.pk))


def test_api_requests_build_the_actor_from_the_key(make_key):
    from rest_framework.test import APIRequestFactory

    from crm_platform.services import api_key_update

    key, _ = make_key()
    # An API-key actor is what services see when called from a view.
    request = APIRequestFactory().get("/", REMOTE_ADDR="10.0.0.9")
    request.auth, request.request_id = key, "rid"
    actor = Actor.from_request(request)
    assert (actor.kind, actor.id, actor.ip, actor.request_id) == (ActorKind.API_KEY, str(key.pk), "10.0.0.9", "rid")
    api_key_update(api_key=key, actor=actor, name="renamed")
    event = AuditEvent.objects.get(action="api_key.update")
    assert event.actor_kind == "api_key" and event.changes == {"name": {"old": "test key", "new": "renamed"}}


def test_client_ip_honours_only_trusted_proxies(rf, settings):
    from crm_platform.actor import client_ip

    request = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5")
    assert client_ip(request) == "10.0.0.1"
    settings.TRUSTED_PROXY_COUNT = 1
    assert client_ip(request) == "203.0.113.5"
    # Addresses come back in their canonical form; anything else is no address.
    for forwarded, expected in (("2001:DB8::0001", "2001:db8::1"), ("not-an-ip", None), ("", "10.0.0.1")):
        assert client_ip(rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)) == expected
