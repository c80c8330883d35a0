"""The bulk upsert against concurrent writers of the same contacts: row locks in one order (the
contacts' ids), a deadlock retried, and a batch that keeps deadlocking answered 503, never 500."""

import threading

import psycopg
import pytest
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from compliance.models import AuditEvent
from contacts import bulk
from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from tests.support import other_connection, wait_until

URL = "/api/v1/contacts/bulk-upsert"


def _client(raw: str) -> APIClient:
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def _lock_waiters(watcher) -> int:
    return watcher.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()[0]


def test_a_batch_naming_contacts_in_another_order_than_a_concurrent_writer_waits_instead_of_deadlocking(
    transactional_db, make_key
):
    """Another writer locks the contacts in the order of their ids (as a concurrent batch does):
    the first, then, once this batch waits, the second. The batch names them the other way
    round; locking them in its rows' order it held the second while waiting for the first, the
    writer then waited for the second, PostgreSQL broke the deadlock by failing the batch, and
    the whole batch answered 500."""
    _, raw = make_key(["contacts:write"])
    first, second = ContactFactory(email="first@example.com"), ContactFactory(email="second@example.com")
    # Moves the first contact's row after the second's in the table, so a scan of the table
    # meets them in the rows' order too, not in the ids' order.
    Contact.objects.filter(pk=first.pk).update(city="Moved")
    rows = [{"email": "second@example.com", "city": "Batch"}, {"email": "first@example.com", "city": "Batch"}]
    outcome = {}

    def post() -> None:
        try:
            outcome["response"] = _client(raw).post(URL, {"contacts": rows}, format="json")
        finally:
            connection.close()

    with other_connection() as writer, other_connection(autocommit=True) as watcher:
        writer.execute("UPDATE contacts_contact SET region = 'Writer' WHERE id = %s", [first.pk])
        thread = threading.Thread(target=post)
        thread.start()
        wait_until(lambda: _lock_waiters(watcher))  # the batch waits for the first contact
        try:
            writer.execute("UPDATE contacts_contact SET region = 'Writer' WHERE id = %s", [second.pk])
            writer.commit()
        except psycopg.errors.DeadlockDetected:  # the writer was the one failed: not what is tested
            writer.rollback()
        thread.join(timeout=20)

    response = outcome["response"]
    assert response.status_code == 200, response.content
    assert [r["status"] for r in response.json()["results"]] == ["updated", "updated"]
    assert set(Contact.objects.values_list("city", "region")) == {("Batch", "Writer")}


def _deadlock() -> OperationalError:
    """What Django raises when PostgreSQL failed a statement to break a deadlock."""
    try:
        raise psycopg.errors.DeadlockDetected("deadlock detected")
    except psycopg.errors.DeadlockDetected as cause:
        error = OperationalError("deadlock detected")
        error.__cause__ = cause
        return error


@pytest.mark.django_db
def test_a_batch_failed_by_a_deadlock_is_tried_again_whole_and_answered_row_by_row(key_client, monkeypatch):
    writer = key_client(["contacts:write"])
    ContactFactory(email="old@example.com")
    create = bulk._create
    calls = []

    def deadlocks_once(*args, **kwargs):
        create(*args, **kwargs)  # the first attempt's creates and update are rolled back
        calls.append(1)
        if len(calls) == 1:
            raise _deadlock()

    monkeypatch.setattr(bulk, "_create", deadlocks_once)
    rows = [{"email": "new@example.com"}, {"email": "old@example.com", "city": "Oslo"}, {"email": "broken"}]
    response = writer.post(URL, {"contacts": rows}, format="json")
    assert response.status_code == 200, response.content
    assert [r["status"] for r in response.json()["results"]] == ["created", "updated", "error"]
    assert len(calls) == 2
    assert Contact.objects.filter(email="new@example.com").count() == 1
    assert AuditEvent.objects.filter(action__in=["contact.create", "contact.update"]).count() == 2


@pytest.mark.django_db
def test_a_batch_that_keeps_deadlocking_answers_503_with_retry_after_and_writes_nothing(key_client, monkeypatch):
    writer = key_client(["contacts:write"])
    calls = []

    def deadlocks(*args, **kwargs):
        calls.append(1)
        raise _deadlock()

    monkeypatch.setattr(bulk, "_create", deadlocks)
    writer.raise_request_exception = False
    response = writer.post(URL, {"contacts": [{"email": "new@example.com"}]}, format="json")
    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "unavailable"
    assert len(calls) == bulk.ATTEMPTS
    assert not Contact.objects.exists()
