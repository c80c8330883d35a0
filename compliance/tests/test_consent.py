"""Consent (GET/PUT /api/v1/contacts/{id}/consents), restriction of processing
(/api/v1/contacts/{id}/restriction) and can_process, the one answer senders ask at send time."""

from __future__ import annotations

import pytest

from compliance.consent import can_process, consent_grant, consent_revoke, processable_ids, restriction_set
from compliance.models import AuditEvent, Consent, ProcessingRestriction
from compliance.suppression import suppression_add
from contacts import services as contacts
from contacts.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def writer(key_client):
    return key_client(["consents:write", "contacts:read"])


@pytest.fixture
def contact():
    return ContactFactory(email="consenting@example.com", phone="+14155550111")


def _put(client, contact, *decisions):
    return client.put(f"/api/v1/contacts/{contact.pk}/consents", {"consents": list(decisions)}, format="json")


GRANT_EMAIL = {"purpose": "marketing_email", "granted": True, "source": "signup form", "text_version": "v3"}


def test_put_records_a_grant_with_its_proof_and_get_shows_it(writer, contact):
    response = _put(writer, contact, {**GRANT_EMAIL, "ip": "203.0.113.9", "user_agent": "Mozilla/5.0"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert [(c["purpose"], c["channel"], c["granted"]) for c in body["consents"]] == [
        ("marketing_email", "email", True)
    ]
    row = Consent.objects.get()
    assert (str(row.proof_ip), row.proof_user_agent, row.text_version) == ("203.0.113.9", "Mozilla/5.0", "v3")
    assert row.granted_at is not None and row.revoked_at is None
    assert writer.get(f"/api/v1/contacts/{contact.pk}/consents").json() == body
    assert AuditEvent.objects.filter(action="consent.grant", object_id=str(row.pk)).exists()


def test_revocation_keeps_the_history(writer, contact):
    _put(writer, contact, GRANT_EMAIL)
    body = _put(writer, contact, {**GRANT_EMAIL, "granted": False}).json()
    assert [c["granted"] for c in body["consents"]] == [False]
    assert [c["granted"] for c in body["history"]] == [False, True]
    assert body["history"][0]["revoked_at"] is not None
    assert AuditEvent.objects.filter(action="consent.revoke").count() == 1


def test_the_same_decision_twice_adds_no_history(writer, contact):
    _put(writer, contact, GRANT_EMAIL)
    _put(writer, contact, GRANT_EMAIL)
    assert Consent.objects.count() == 1


def test_put_is_all_or_nothing(writer, contact):
    response = _put(writer, contact, GRANT_EMAIL, {"purpose": "telepathy", "granted": True, "source": "x"})
    assert response.status_code == 400 and "consents.1.purpose" in response.json()["error"]["fields"]
    assert not Consent.objects.exists()


def test_marketing_sms_grant_needs_the_disclosure_text_version(writer, contact):
    response = _put(writer, contact, {"purpose": "marketing_sms", "granted": True, "source": "sms keyword"})
    assert response.status_code == 400 and "text_version" in response.json()["error"]["fields"]


def test_sharing_with_a_third_party_names_it(writer, contact):
    response = _put(writer, contact, {"purpose": "third_party_sharing", "granted": True, "source": "settings"})
    assert response.status_code == 400 and "third_party" in response.json()["error"]["fields"]
    ok = _put(
        writer,
        contact,
        {"purpose": "third_party_sharing", "third_party": "Acme Labs", "granted": True, "source": "settings"},
    )
    assert ok.status_code == 200
    assert can_process(contact, "third_party_sharing", third_party="Acme Labs")
    assert not can_process(contact, "third_party_sharing", third_party="Other Corp")


def test_writing_consents_needs_the_consents_scope(key_client, contact):
    response = _put(key_client(["contacts:write", "contacts:read"]), contact, GRANT_EMAIL)
    assert response.status_code == 403 and "consents:write" in response.json()["error"]["message"]
    assert key_client(["contacts:read"]).get(f"/api/v1/contacts/{contact.pk}/consents").status_code == 200
    assert key_client(["leads:read"]).get(f"/api/v1/contacts/{contact.pk}/consents").status_code == 403


def test_consents_of_an_unknown_contact_are_404(writer):
    assert writer.get("/api/v1/contacts/999999/consents").status_code == 404


# ----------------------------------------------------------------------------- can_process


def test_marketing_needs_a_grant_transactional_does_not(contact, system_actor):
    assert can_process(contact, "marketing_email").reason == "no consent"
    assert can_process(contact, "transactional", "email")
    consent_grant(contact=contact, purpose="marketing_email", source="form", actor=system_actor)
    assert can_process(contact, "marketing_email")
    assert not can_process(contact, "marketing_sms")


def test_a_channel_decision_beats_an_any_channel_one(contact, system_actor):
    consent_grant(contact=contact, purpose="transactional", source="form", actor=system_actor, channel="any")
    consent_revoke(contact=contact, purpose="transactional", source="sms STOP", actor=system_actor, channel="sms")
    assert can_process(contact, "transactional", "email")
    assert can_process(contact, "transactional", "sms").reason == "consent revoked"


def test_a_revocation_stops_a_message_queued_before_it(contact, system_actor):
    """Senders ask at send time: a message queued while consent stood is not sent after a revoke."""
    consent_grant(contact=contact, purpose="marketing_email", source="form", actor=system_actor)
    queued = [contact.pk]  # the campaign selected its audience (consent held then)
    assert all(processable_ids(queued, "marketing_email").values())
    consent_revoke(contact=contact, purpose="marketing_email", source="unsubscribe link", actor=system_actor)
    at_send_time = processable_ids(queued, "marketing_email")
    assert not at_send_time[contact.pk] and at_send_time[contact.pk].reason == "consent revoked"


def test_restriction_stops_marketing_sync_and_ai_but_not_transactional(contact, system_actor):
    for purpose in ("marketing_email", "ai_processing"):
        consent_grant(contact=contact, purpose=purpose, source="form", actor=system_actor)
    restriction_set(contact=contact, reason="accuracy contested", actor=system_actor)
    for purpose in ("marketing_email", "ai_processing", "provider_sync", "analytics"):
        assert can_process(contact, purpose).reason == "processing restricted"
    assert can_process(contact, "transactional", "email")


def test_a_suppressed_address_is_never_messaged(contact, system_actor):
    consent_grant(contact=contact, purpose="marketing_email", source="form", actor=system_actor)
    suppression_add(actor=system_actor, email=contact.email)
    assert can_process(contact, "marketing_email").reason == "suppressed"
    assert not can_process(contact, "transactional", "email")


def test_processable_ids_answers_many_in_a_few_queries(system_actor, django_assert_max_num_queries):
    people = ContactFactory.create_batch(30)
    for person in people[:10]:
        consent_grant(contact=person, purpose="marketing_email", source="form", actor=system_actor)
    with django_assert_max_num_queries(4):
        answers = processable_ids([p.pk for p in people] + [10**9], "marketing_email")
    assert sum(bool(a) for a in answers.values()) == 10 and answers[10**9].reason == "unknown contact"


def test_unknown_purpose_is_a_programming_error(contact):
    with pytest.raises(ValueError):
        can_process(contact, "telepathy")


# ----------------------------------------------------------------------------- restriction API


def test_restriction_api_sets_and_lifts(key_client, contact):
    gdpr = key_client(["gdpr:write", "contacts:read"])
    url = f"/api/v1/contacts/{contact.pk}/restriction"
    assert gdpr.get(url).json()["restricted"] is False
    response = gdpr.put(url, {"reason": "Art. 18 request of 2026-11-26"}, format="json")
    assert response.status_code == 200 and response.json()["restricted"] is True
    assert not can_process(contact, "provider_sync")
    lifted = gdpr.delete(url)
    assert lifted.status_code == 200 and lifted.json()["restricted"] is False
    assert can_process(contact, "provider_sync")
    actions = list(AuditEvent.objects.filter(action__startswith="restriction.").values_list("action", flat=True))
    assert sorted(actions) == ["restriction.lift", "restriction.set"]


def test_restricting_needs_gdpr_scope_and_a_reason(key_client, contact):
    url = f"/api/v1/contacts/{contact.pk}/restriction"
    assert key_client(["contacts:write"]).put(url, {"reason": "x"}, format="json").status_code == 403
    assert key_client(["gdpr:write"]).put(url, {}, format="json").status_code == 400
    assert key_client(["gdpr:write"]).put("/api/v1/contacts/999999/restriction", {"reason": "x"}).status_code == 404
    assert not ProcessingRestriction.objects.exists()


# ----------------------------------------------------------------------------- merge


def test_consents_follow_a_merge_and_the_latest_decision_wins(contact, system_actor):
    loser = ContactFactory()
    consent_grant(contact=contact, purpose="marketing_email", source="form", actor=system_actor)
    consent_revoke(contact=loser, purpose="marketing_email", source="unsubscribe", actor=system_actor)
    consent_grant(contact=loser, purpose="analytics", source="cookie banner", actor=system_actor)
    restriction_set(contact=loser, reason="objection", actor=system_actor)
    contacts.contact_merge(survivor=contact, loser=loser, actor=system_actor)
    assert Consent.objects.filter(contact=loser).count() == 0
    current = {c.purpose: c.granted for c in Consent.objects.filter(contact=contact, is_current=True)}
    assert current == {"marketing_email": False, "analytics": True}
    assert ProcessingRestriction.objects.filter(contact=contact, lifted_at__isnull=True).count() == 1


def test_admin_lists_consents_and_restrictions(admin_client, contact, system_actor):
    consent_grant(contact=contact, purpose="marketing_email", source="form", actor=system_actor)
    page = admin_client.get("/admin/compliance/consent/", {"q": str(contact.pk)})
    assert page.status_code == 200 and b"marketing_email" in page.content
    assert admin_client.get("/admin/compliance/consent/add/").status_code == 403
    added = admin_client.post(
        "/admin/compliance/processingrestriction/add/", {"contact": contact.pk, "reason": "staff-entered request"}
    )
    assert added.status_code == 302
    restriction = ProcessingRestriction.objects.get(contact=contact)
    assert AuditEvent.objects.filter(action="restriction.set", object_id=str(restriction.pk)).exists()
    admin_client.post(
        "/admin/compliance/processingrestriction/", {"action": "lift", "_selected_action": [restriction.pk]}
    )
    restriction.refresh_from_db()
    assert restriction.lifted_at is not None


def test_the_contact_privacy_page_shows_consents_and_answers(client, django_user_model, contact, system_actor):
    from django.contrib.auth.models import Group

    consent_grant(contact=contact, purpose="marketing_email", source="form", actor=system_actor, ip="10.1.2.3")
    restriction_set(contact=contact, reason="accuracy contested", actor=system_actor)
    officer = django_user_model.objects.create_user(username="officer", password="a-long-test-password", is_staff=True)
    officer.groups.add(Group.objects.get(name="Compliance officer"))
    client.force_login(officer)
    change = client.get(f"/admin/contacts/contact/{contact.pk}/change/")
    assert f"/admin/compliance/consent/contact/{contact.pk}/".encode() in change.content
    page = client.get(f"/admin/compliance/consent/contact/{contact.pk}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "10.1.2.3" in text and "processing restricted" in text and "accuracy contested" in text
    assert client.get("/admin/compliance/consent/contact/999999/").status_code == 404
