"""GDPR Art. 18: while a contact's processing is restricted, nothing about them leaves through
the outbox (webhooks today, every destination tomorrow), except the erasure's contact.deleted;
lifting the restriction sends their current state once. Through the HTTP routes (restriction,
contact edits, app events) and the relay task, to the loopback webhook receiver."""

import datetime as dt
import json
import threading

import pytest
from django.utils import timezone

from contacts.tests.factories import ContactFactory
from crm_platform.models import OutboxMessage
from integrations.relay import WITHHELD
from integrations.tasks import inbox_apply, outbox_relay
from integrations.tests.conftest import verified
from tests.support import other_connection, wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(key_client):
    return key_client(["contacts:write", "gdpr:write", "events:write"], name="back office")


def _restrict(staff, contact):
    response = staff.put(f"/api/v1/contacts/{contact.pk}/restriction", {"reason": "accuracy contested"}, format="json")
    assert response.status_code == 200 and response.json()["restricted"] is True, response.content


def _lift(staff, contact):
    response = staff.delete(f"/api/v1/contacts/{contact.pk}/restriction")
    assert response.status_code == 200 and response.json()["restricted"] is False, response.content


def _received(receiver, secret) -> list[tuple[str, dict]]:
    bodies = [verified(secret, request) for request in receiver.requests]
    return [(body["type"], body["data"]) for body in bodies]


def test_a_restricted_contacts_changes_are_withheld_and_lifting_sends_their_current_state(
    make_endpoint, receiver, staff
):
    _, secret = make_endpoint()
    person = ContactFactory(email="paused@example.com", external_id="u-1", first_name="Ann")
    other = ContactFactory(email="other@example.com", first_name="Bo")
    _restrict(staff, person)

    assert staff.patch(f"/api/v1/contacts/{person.pk}", {"first_name": "Anna"}, format="json").status_code == 200
    order = {"type": "order_placed", "user": {"external_id": "u-1"}, "properties": {"order_id": "o-1", "amount": "30"}}
    assert staff.post("/api/v1/events", order, format="json", HTTP_IDEMPOTENCY_KEY="o-1").status_code == 202
    inbox_apply()  # the order is applied (the CRM keeps processing it): order.created names the person
    assert staff.patch(f"/api/v1/contacts/{other.pk}", {"first_name": "Bob"}, format="json").status_code == 200
    outbox_relay()

    assert [(kind, data["id"]) for kind, data in _received(receiver, secret)] == [("contact.updated", other.pk)]
    withheld = OutboxMessage.objects.filter(parent__isnull=True, last_error=WITHHELD)
    assert {"contact.updated", "contact.lifecycle_changed", "order.created"} <= set(
        withheld.values_list("topic", flat=True)
    )
    assert not OutboxMessage.objects.filter(parent__in=withheld).exists()
    assert set(withheld.values_list("status", flat=True)) == {"routed"}

    receiver.requests.clear()
    _lift(staff, person)
    outbox_relay()
    [(kind, data)] = _received(receiver, secret)
    assert kind == "contact.updated" and data["id"] == person.pk and data["first_name"] == "Anna"
    assert {"first_name", "email", "lifecycle_stage"} <= set(data["changed"])  # whatever they missed
    outbox_relay()
    assert len(receiver.requests) == 1  # what was withheld stays withheld


def test_a_delivery_queued_before_the_restriction_is_not_retried_after_it(make_endpoint, receiver, staff):
    """A change routed just before the restriction, its endpoint failing: its retries (for up to
    a day and more) must not carry the person's data out once they asked us to stop."""
    make_endpoint()
    person = ContactFactory(email="paused@example.com", first_name="Ann")
    receiver.default = 503
    assert staff.patch(f"/api/v1/contacts/{person.pk}", {"first_name": "Anna"}, format="json").status_code == 200
    outbox_relay()
    assert len(receiver.requests) == 1
    _restrict(staff, person)
    receiver.default = 200
    OutboxMessage.objects.filter(status="failed").update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))
    outbox_relay()

    assert len(receiver.requests) == 1
    row = OutboxMessage.objects.get(parent__isnull=False)
    assert (row.status, row.last_error, row.attempts) == ("dead", WITHHELD, 1)
    from integrations.models import SyncEvent

    assert SyncEvent.objects.get(outbox_message=row).status == "dead"


def test_a_merge_does_not_let_a_restricted_contacts_queued_changes_out(make_endpoint, receiver, staff):
    """A merge moves the loser's restriction to the survivor, while the loser's change may still
    be queued for retry under the loser's id: the person is still restricted."""
    make_endpoint()
    survivor = ContactFactory(email="keep@example.com", first_name="Ann")
    loser = ContactFactory(email="loser@example.com", first_name="Ann")
    receiver.default = 503
    assert staff.patch(f"/api/v1/contacts/{loser.pk}", {"first_name": "Anne"}, format="json").status_code == 200
    outbox_relay()
    _restrict(staff, loser)
    merged = staff.post(f"/api/v1/contacts/{survivor.pk}/merge", {"loser": loser.pk}, format="json")
    assert merged.status_code == 200, merged.content
    receiver.requests.clear()
    receiver.default = 200
    OutboxMessage.objects.filter(status="failed").update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))
    outbox_relay()

    assert "loser@example.com" not in json.dumps([r.body.decode() for r in receiver.requests])
    row = OutboxMessage.objects.get(parent__isnull=False, object_id=str(loser.pk), topic="contact.updated")
    assert (row.status, row.last_error) == ("dead", WITHHELD)


def test_an_erasure_still_reaches_the_endpoints_of_a_restricted_contact(make_endpoint, receiver, staff):
    """contact.deleted is the one message a restriction never holds back: the providers holding a
    copy must delete it (Art. 17/19)."""
    _, secret = make_endpoint()
    person = ContactFactory(email="gone@example.com")
    _restrict(staff, person)
    assert staff.post(f"/api/v1/contacts/{person.pk}/erase", HTTP_IDEMPOTENCY_KEY="erase-1").status_code == 200
    outbox_relay()
    assert [kind for kind, _ in _received(receiver, secret)] == ["contact.deleted"]
    assert "gone@example.com" not in json.dumps([r.body.decode() for r in receiver.requests])


@pytest.mark.django_db(transaction=True)
def test_a_change_still_being_written_when_the_restriction_is_lifted_reaches_the_endpoints(
    make_endpoint, receiver, staff, system_actor
):
    """A change made while restricted, in a transaction that commits only after the lift (an
    inbox batch, a slow request): its own message is withheld, being produced while restricted,
    and the lift's catch-up read the contact without waiting for it, so the endpoints never
    heard of the change. The lift now waits for the contact's row and reads it afresh."""
    from django.db import connection, transaction

    from contacts.services import contact_update

    _, secret = make_endpoint()
    person = ContactFactory(email="paused@example.com", first_name="Ann")
    _restrict(staff, person)
    written, release, errors = threading.Event(), threading.Event(), []

    def in_thread(work):
        def run():
            try:
                work()
            except BaseException as exc:  # re-raised in the test's thread
                errors.append(exc)
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def change():
        with transaction.atomic():
            contact_update(contact=person, actor=system_actor, first_name="Anna")
            written.set()
            release.wait(10)

    writer = in_thread(change)
    assert written.wait(10)
    lifter = in_thread(lambda: _lift(staff, person))
    with other_connection(autocommit=True) as watcher:  # the lift ends, or waits for the change

        def lift_ended_or_waits():
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return not lifter.is_alive() or watcher.execute(waiting).fetchone()[0]

        wait_until(lift_ended_or_waits)
    release.set()
    writer.join()
    lifter.join()
    assert not errors, errors
    outbox_relay()

    [(kind, data)] = _received(receiver, secret)
    assert (kind, data["id"], data["first_name"]) == ("contact.updated", person.pk, "Anna")
