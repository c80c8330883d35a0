"""Writers racing one contact: an erasure or a merge landing while another request (or job)
works on the same person. Each race is made repeatable by holding a row lock in another session
until every racer waits at the point the race is about (tests.support)."""

import pytest

from contacts.models import Activity, Contact, Note, Order
from contacts.tasks import lifecycle_sweep
from contacts.tests.factories import ContactFactory
from tests.support import InThread, behind_a_lock, other_connection, waiting_on_locks

pytestmark = pytest.mark.django_db(transaction=True)


def _erasure_racing(gdpr, contact, *racers):
    """Erase `contact` through the API while each racer runs: the erasure locks the contact's
    row, then waits (on one of its activities, held by another session) until every racer waits
    too; then it goes on and commits. Returns the erasure's answer and the racers' outcomes."""
    Activity.objects.create(contact=contact, type="page_viewed")
    with other_connection() as holder:
        holder.execute("SELECT 1 FROM contacts_activity WHERE contact_id = %s FOR UPDATE", [contact.pk])
        erasure = InThread(lambda: gdpr.post(f"/api/v1/contacts/{contact.pk}/erase"))
        waiting_on_locks(1)
        threads = [InThread(racer) for racer in racers]
        waiting_on_locks(1 + len(racers))
        holder.commit()
        answer = erasure.outcome()
    assert answer.status_code == 200, answer.content
    return answer, [thread.outcome() for thread in threads]


@pytest.fixture
def gdpr(key_client):
    client = key_client(["gdpr:write"])
    client.raise_request_exception = False
    return client


@pytest.fixture
def writer(key_client):
    client = key_client(["contacts:read", "contacts:write"])
    client.raise_request_exception = False
    return client


def test_a_merge_racing_the_erasure_of_its_survivor_is_a_404(gdpr, writer):
    """The merge's view found both contacts, then waited for the survivor's row while it was
    erased: the merge's locked read missed the survivor (a KeyError) and answered 500."""
    survivor = ContactFactory(email="survivor@example.com")
    loser = ContactFactory(email="loser@example.com")
    _, (merged,) = _erasure_racing(
        gdpr,
        survivor,
        lambda: writer.post(f"/api/v1/contacts/{survivor.pk}/merge", {"loser": loser.pk}, format="json"),
    )
    assert merged.status_code == 404, merged.content
    assert merged.json()["error"]["code"] == "not_found"
    assert Contact.objects.get(pk=loser.pk).merged_into_id is None


def test_a_bulk_upsert_racing_an_erasure_does_not_bring_the_person_back(gdpr, writer):
    """The batch checked the suppression list before the erasure put the person on it, then
    waited for their row while they were erased: it found no contact and created them again,
    with the email the erasure had just suppressed."""
    person = ContactFactory(email="erase.me@example.com", first_name="Ada")
    _, (answer,) = _erasure_racing(
        gdpr,
        person,
        lambda: writer.post(
            "/api/v1/contacts/bulk-upsert",
            {"contacts": [{"email": "erase.me@example.com", "first_name": "Ada"}]},
            format="json",
        ),
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["results"][0]["status"] == "error", answer.json()
    assert not Contact.objects.filter(email="erase.me@example.com").exists()


def test_an_order_for_a_contact_erased_while_it_is_recorded_is_a_404(writer):
    """Found by the serializer, then erased (another request) while the order waits for the
    contact's row: the order's refresh of the contact raised DoesNotExist (500)."""
    contact = ContactFactory(email="buyer@example.com")
    answer = behind_a_lock(
        "DELETE FROM contacts_contact WHERE id = %s",
        [contact.pk],
        lambda: writer.post(
            "/api/v1/orders", {"contact": contact.pk, "amount": "10.00", "external_id": "o-race"}, format="json"
        ),
    )
    assert answer.status_code == 404, answer.content
    assert not Order.objects.exists()


def test_a_note_on_a_contact_erased_while_it_is_written_is_a_404(writer):
    """The note's foreign key is checked at COMMIT, after the erasure removed the contact: 500."""
    contact = ContactFactory(email="noted@example.com")
    answer = behind_a_lock(
        "DELETE FROM contacts_contact WHERE id = %s",
        [contact.pk],
        lambda: writer.post("/api/v1/notes", {"contact": contact.pk, "body": "called"}, format="json"),
    )
    assert answer.status_code == 404, answer.content
    assert not Note.objects.exists()


def test_the_lifecycle_sweep_goes_on_past_a_contact_erased_while_it_runs():
    """The sweep read its candidates, then one of them was erased while it waited for the
    row: lifecycle_transition's Http404 stopped the whole job, leaving the others unmoved."""
    import datetime as dt

    from django.utils import timezone

    old = timezone.now() - dt.timedelta(days=400)
    first = ContactFactory(email="gone@example.com", lifecycle_stage="active_customer", last_active_at=old)
    second = ContactFactory(email="stays@example.com", lifecycle_stage="active_customer", last_active_at=old)
    assert first.pk < second.pk
    moved = behind_a_lock("DELETE FROM contacts_contact WHERE id = %s", [first.pk], lifecycle_sweep)
    assert Contact.objects.get(pk=second.pk).lifecycle_stage == "churned"
    assert moved["churned"] == 1


def test_the_lifecycle_sweep_leaves_a_contact_active_again_while_it_waits():
    """The sweep judged a contact inactive, then waited for its row while an event touched it:
    it churned a contact that was active a moment before (a decision on a stale read)."""
    import datetime as dt

    from django.utils import timezone

    old = timezone.now() - dt.timedelta(days=400)
    contact = ContactFactory(email="back@example.com", lifecycle_stage="active_customer", last_active_at=old)
    behind_a_lock("UPDATE contacts_contact SET last_active_at = now() WHERE id = %s", [contact.pk], lifecycle_sweep)
    assert Contact.objects.get(pk=contact.pk).lifecycle_stage == "active_customer"
