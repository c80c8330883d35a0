"""The inbox applier racing a merge or an erasure of a contact its batch names: each race made
repeatable by pausing the merge or the erasure (a row lock held by another session) until the
applier waits on the contact too."""

import pytest

from compliance.suppression import suppressed_values
from contacts.models import Activity, Contact
from contacts.tests.factories import ContactFactory
from integrations.models import InboundEvent
from integrations.tasks import inbox_apply
from tests.support import InThread, other_connection, waiting_on_locks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def clients(key_client):
    app = key_client(["events:write"])
    staff = key_client(["contacts:read", "contacts:write", "gdpr:write"])
    staff.raise_request_exception = False
    return app, staff


def _queue(app, event, key):
    answer = app.post("/api/v1/events", event, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert answer.status_code == 202, answer.content


def _paused(contact, request, applier=inbox_apply):
    """`request()` (a merge or an erasure that locks `contact` first, then changes its
    activities) paused on one of the contact's activities, held by another session, until the
    applier waits for the contact too; then both go on. Returns (request's answer, applier's
    outcome)."""
    Activity.objects.create(contact=contact, type="seed")
    with other_connection() as holder:
        holder.execute(
            "SELECT 1 FROM contacts_activity WHERE contact_id = %s AND type = 'seed' FOR UPDATE", [contact.pk]
        )
        first = InThread(request)
        waiting_on_locks(1)
        second = InThread(applier)
        waiting_on_locks(2)
        holder.commit()
        answer = first.outcome()
    return answer, second.outcome()


@pytest.mark.parametrize("event_type", ["page_viewed", "user_logged_in"])
def test_an_event_applied_beside_a_merge_lands_on_the_survivor(clients, event_type):
    """The batch looked the user up before the merge committed and wrote the activity (and, for
    a login, the contact's fields) on the merged-away contact, after the merge had moved its
    timeline: the person's activity is split, and the loser keeps growing."""
    app, staff = clients
    survivor = ContactFactory(email="survivor@example.com")
    loser = ContactFactory(email=None, external_id="u-loser")
    _queue(app, {"type": event_type, "user": {"external_id": "u-loser"}}, "k1")
    answer, _ = _paused(
        loser, lambda: staff.post(f"/api/v1/contacts/{survivor.pk}/merge", {"loser": loser.pk}, format="json")
    )
    assert answer.status_code == 200, answer.content
    assert InboundEvent.objects.get().status == "applied"
    assert list(Activity.objects.filter(contact=loser).values_list("type", flat=True)) == []
    assert Activity.objects.filter(contact=survivor, type=event_type).count() == 1
    if event_type == "user_logged_in":
        assert Contact.objects.get(pk=survivor.pk).last_login_at is not None
        assert Contact.objects.get(pk=loser.pk).last_login_at is None


def test_a_queued_sign_up_does_not_bring_back_a_person_erased_while_it_is_applied(clients):
    """The applier had read the queued sign-up when the erasure deleted it: the sign-up waited
    for the contact's row, found it gone (Http404 broke the batch), and applied alone it created
    the person again and took their email off the suppression list."""
    app, staff = clients
    person = ContactFactory(email="erase.me@example.com", external_id="u-erased")
    _queue(
        app,
        {
            "type": "account_created",
            "user": {"external_id": "u-erased", "email": "erase.me@example.com"},
            "properties": {"first_name": "Ada"},
        },
        "k1",
    )
    answer, _ = _paused(person, lambda: staff.post(f"/api/v1/contacts/{person.pk}/erase"))
    assert answer.status_code == 200, answer.content
    assert not Contact.objects.filter(external_id="u-erased").exists()
    assert not Contact.objects.filter(email="erase.me@example.com").exists()
    assert suppressed_values(emails=["erase.me@example.com"], phones=[]) == {"erase.me@example.com"}


def test_a_batch_naming_a_person_erased_while_it_runs_applies_the_other_events(clients):
    """The batch touched the contact while the erasure held it, then inserted its activity: the
    activity's foreign key failed at COMMIT and the whole batch (everyone's events) raised out
    of the task."""
    app, staff = clients
    person = ContactFactory(email=None, external_id="u-erased")
    ContactFactory(email=None, external_id="u-other")
    _queue(app, {"type": "page_viewed", "user": {"external_id": "u-erased"}}, "k1")
    _queue(app, {"type": "page_viewed", "user": {"external_id": "u-other"}}, "k2")
    answer, counts = _paused(person, lambda: staff.post(f"/api/v1/contacts/{person.pk}/erase"))
    assert answer.status_code == 200, answer.content
    assert counts["applied"] == 1, counts
    assert Activity.objects.filter(contact__external_id="u-other", type="page_viewed").count() == 1
