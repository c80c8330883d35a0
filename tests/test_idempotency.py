from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from compliance.tasks import retention_purge
from contacts.models import Contact
from crm_platform.models import IdempotencyRecord
from tests.support import race

pytestmark = pytest.mark.django_db
URL = "/api/v1/contacts"


@pytest.fixture
def writer(key_client):
    return key_client(["contacts:write"])


def post(client, body, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(URL, body, format="json", **headers)


def test_same_key_and_body_replays_the_first_response(writer):
    first = post(writer, {"email": "a@example.com"}, key="k-1")
    again = post(writer, {"email": "a@example.com"}, key="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Contact.objects.count() == 1


def test_same_key_other_body_is_422(writer):
    post(writer, {"email": "a@example.com"}, key="k-1")
    response = post(writer, {"email": "b@example.com"}, key="k-1")
    assert response.status_code == 422 and response.json()["error"]["code"] == "idempotency_key_reused"
    assert Contact.objects.count() == 1


def test_key_still_in_flight_is_409_until_it_is_abandoned(writer, settings):
    first = post(writer, {"email": "a@example.com"}, key="k-2")
    record = IdempotencyRecord.objects.get(key="k-2")
    IdempotencyRecord.objects.filter(pk=record.pk).update(status="in_flight", response_body=None)
    busy = post(writer, {"email": "a@example.com"}, key="k-2")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "idempotency_key_in_flight"
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_IN_FLIGHT_SECONDS + 1)
    )
    taken_over = post(writer, {"email": "a@example.com"}, key="k-2")
    assert taken_over.status_code == 409 and taken_over.json()["error"]["code"] == "duplicate_contact"
    assert first.status_code == 201


def test_a_refused_request_releases_its_key(writer):
    bad = post(writer, {"email": "not-an-email"}, key="k-3")
    assert bad.status_code == 400
    assert not IdempotencyRecord.objects.filter(key="k-3").exists()
    good = post(writer, {"email": "fixed@example.com"}, key="k-3")
    assert good.status_code == 201


def test_a_key_released_between_our_insert_and_our_read_is_claimed_again(writer):
    """Request A holds the key; ours meets it (IntegrityError); A fails and releases it before
    we read it: that read found nothing, a 500. The key is free: we claim it and go on."""
    from django.db import connection

    post(writer, {"email": "warm@example.com"}, key="warm")
    owner = IdempotencyRecord.objects.get(key="warm").owner
    IdempotencyRecord.objects.create(owner=owner, key="k-r", request_hash="a" * 64)  # A's claim, in flight
    table = IdempotencyRecord._meta.db_table
    released = []

    def a_releases_before_our_read(execute, sql, params, many, context):
        if not released and sql.lstrip().startswith("SELECT") and table in sql:
            released.append(True)  # A's idempotency_release, landing just now
            with connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {table} WHERE key = %s", ["k-r"])  # noqa: S608 - our table
        return execute(sql, params, many, context)

    with connection.execute_wrapper(a_releases_before_our_read):
        response = post(writer, {"email": "b@example.com"}, key="k-r")
    assert released and response.status_code == 201, response.content
    assert IdempotencyRecord.objects.get(key="k-r").status == IdempotencyRecord.Status.COMPLETED


def test_keys_belong_to_their_client(key_client):
    one, two = key_client(["contacts:write"], name="one"), key_client(["contacts:write"], name="two")
    assert post(one, {"email": "a@example.com"}, key="same").status_code == 201
    other = post(two, {"email": "b@example.com"}, key="same")
    assert other.status_code == 201 and "Idempotent-Replayed" not in other


@pytest.mark.parametrize("bad", ["", "has space", "x" * 256])
def test_malformed_key_is_400(writer, bad):
    response = writer.post(URL, {"email": "a@example.com"}, format="json", HTTP_IDEMPOTENCY_KEY=bad)
    assert response.status_code == 400 and response.json()["error"]["code"] in (
        "idempotency_key_invalid",
        "idempotency_key_missing",
    )


@pytest.mark.urls("tests.urls")
def test_required_key_missing_is_400(key_client):
    client = key_client(["events:write"])
    missing = client.post("/t/idempotent-required", {"a": 1}, format="json")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "idempotency_key_missing"
    ok = client.post("/t/idempotent-required", {"a": 1}, format="json", HTTP_IDEMPOTENCY_KEY="e-1")
    assert ok.status_code == 202 and ok.json() == {"echo": {"a": 1}}


def test_two_identical_requests_racing_make_one_contact(transactional_db, make_key):
    _, raw = make_key(["contacts:write"])

    def send(n):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return post(client, {"email": "race@example.com"}, key="race-1").status_code

    statuses = race(6, send)
    assert Contact.objects.filter(email="race@example.com").count() == 1
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}


def test_purge_job_deletes_old_records(writer):
    post(writer, {"email": "a@example.com"}, key="old")
    post(writer, {"email": "b@example.com"}, key="new")
    IdempotencyRecord.objects.filter(key="old").update(created_at=timezone.now() - timedelta(days=8))
    # The registry-driven retention job (compliance.retention) purges them.
    assert retention_purge.apply().get()["crm_platform.idempotencyrecord"] == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


# ----------------------------------------------------------------------------- medical fields (known)

NOTE_BODY = "phimarkerhba1c9point1"


def _note_with_key(make_key, system_actor):
    """A key with phi:read posts a note under an Idempotency-Key; returns (key row, client)."""
    from contacts.tests.factories import ContactFactory

    contact = ContactFactory(email="pat@example.com")
    api_key, raw = make_key(["contacts:write", "phi:read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    body = {"contact": contact.pk, "body": NOTE_BODY}
    first = client.post("/api/v1/notes", body, format="json", HTTP_IDEMPOTENCY_KEY="note-1")
    assert first.status_code == 201 and first.json()["body"] == NOTE_BODY
    return api_key, client, body


def test_a_stored_response_keeps_no_medical_value_in_plaintext(make_key, system_actor):
    from django.db import connection

    _note_with_key(make_key, system_actor)
    with connection.cursor() as cursor:
        cursor.execute("SELECT response_body::text FROM crm_platform_idempotencyrecord")
        stored = " ".join(row[0] for row in cursor.fetchall())
    assert NOTE_BODY not in stored, "a note's body rests in plaintext in the idempotency record"


def test_a_replay_shows_medical_fields_only_to_a_key_that_still_has_phi_read(
    make_key, system_actor, django_capture_on_commit_callbacks
):
    from crm_platform.services import api_key_update

    api_key, client, body = _note_with_key(make_key, system_actor)
    with django_capture_on_commit_callbacks(execute=True):  # the key's cached verification is dropped on commit
        api_key_update(api_key=api_key, actor=system_actor, scopes=["contacts:write"])
    again = client.post("/api/v1/notes", body, format="json", HTTP_IDEMPOTENCY_KEY="note-1")
    assert NOTE_BODY not in again.content.decode(), "the replay skips the phi:read check"
    assert again.status_code == 403 and again.json()["error"]["code"] == "idempotency_replay_withheld"
    with django_capture_on_commit_callbacks(execute=True):
        api_key_update(api_key=api_key, actor=system_actor, scopes=["contacts:write", "phi:read"])
    replayed = client.post("/api/v1/notes", body, format="json", HTTP_IDEMPOTENCY_KEY="note-1")
    assert replayed.headers["Idempotent-Replayed"] == "true" and replayed.json()["body"] == NOTE_BODY


def test_a_retry_sent_with_the_rotated_key_is_still_a_retry(make_key, system_actor):
    """A client rotates its key while a request is in doubt and retries it with the successor:
    the key is scoped to the client (CONTRACTS.md), so that is a replay, not a second contact.
    The chain goes on through a second rotation."""
    from crm_platform.services import api_key_rotate

    def client_for(raw):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        return client

    old, old_raw = make_key(["contacts:write"])
    first = post(client_for(old_raw), {"email": "a@example.com"}, key="in-doubt")
    new, new_raw = api_key_rotate(api_key=old, actor=system_actor, overlap=timedelta(hours=1))
    _, newest_raw = api_key_rotate(api_key=new, actor=system_actor, overlap=timedelta(hours=1))
    for raw in (new_raw, newest_raw):
        again = post(client_for(raw), {"email": "a@example.com"}, key="in-doubt")
        assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        other = post(client_for(raw), {"email": "b@example.com"}, key="in-doubt")
        assert other.status_code == 422
    assert Contact.objects.count() == 1
    # Another client's same key is its own.
    _, stranger_raw = make_key(["contacts:write"])
    assert post(client_for(stranger_raw), {"email": "c@example.com"}, key="in-doubt").status_code == 201
