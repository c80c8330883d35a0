"""`manage.py rotate_encryption_keys`: everything re-encrypted under the first key, in batches."""

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from compliance import crypto
from compliance.models import AuditEvent
from contacts import services
from contacts.models import Note, Order, Subscription, Ticket
from contacts.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


def _rotate(*args) -> str:
    out = StringIO()
    call_command("rotate_encryption_keys", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _raw_tokens() -> list[str]:
    tokens = []
    with connection.cursor() as cursor:
        for table, column in (
            ("contacts_note", "body"),
            ("contacts_ticket", "body"),
            ("contacts_order", "items"),
            ("contacts_subscription", "plan"),
        ):
            cursor.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL")  # noqa: S608
            tokens += [row[0] for row in cursor.fetchall()]
    return tokens


def _data(system_actor):
    contact = ContactFactory()
    for i in range(7):
        services.note_create(contact=contact, body=f"note {i}", actor=system_actor)
    services.ticket_create(contact=contact, subject="s", body="dizzy", actor=system_actor)
    services.order_record(contact=contact, amount="10", actor=system_actor, items=[{"sku": "kit"}])
    services.subscription_start(contact=contact, plan="weight care", actor=system_actor)


def test_rotation_moves_every_token_to_the_new_key(system_actor):
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_A]):
        _data(system_actor)
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_B, KEY_A]):
        dry = _rotate("--dry-run")
        assert "done: 10 token(s) on an old key" in dry
        assert not any(crypto.is_current(t) for t in _raw_tokens())  # a dry run writes nothing
        out = _rotate("--batch-size", "3")
        assert "contacts.Note: 3 rows scanned" in out  # progress per batch
        assert "done: 10 token(s) re-encrypted" in out
        assert "done: 0 token(s) on an old key" in _rotate("--dry-run")
        assert "done: 0 token(s) re-encrypted" in _rotate()  # a second run has nothing to do
    rotations = list(AuditEvent.objects.filter(action="encryption.rotate").order_by("id"))
    assert len(rotations) == 2  # each run that writes, on the record; the dry runs are not
    assert rotations[0].changes["re_encrypted"]["new"] == 10 and rotations[0].actor_kind == "system"
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_B]):  # the old key is gone
        assert sorted(n.body for n in Note.objects.all()) == [f"note {i}" for i in range(7)]
        assert Ticket.objects.get().body == "dizzy"
        assert Order.objects.get().items == [{"sku": "kit"}]
        assert Subscription.objects.get().plan == "weight care"


def test_resume_from_a_model_and_position(system_actor):
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_A]):
        _data(system_actor)
    ids = list(Note.objects.order_by("id").values_list("id", flat=True))
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_B, KEY_A]):
        out = _rotate("--model", "contacts.note", "--after", str(ids[3]))
        assert "done: 3 token(s) re-encrypted" in out and "Ticket" not in out
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, body FROM contacts_note ORDER BY id")
            current = {pk: crypto.is_current(token) for pk, token in cursor.fetchall()}
        assert current == {pk: pk > ids[3] for pk in ids}


def test_a_token_no_key_opens_is_reported_and_fails_the_run(system_actor):
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_A]):
        _data(system_actor)
    with override_settings(FIELD_ENCRYPTION_KEYS=[KEY_B]):  # KEY_A dropped too early
        err = StringIO()
        with pytest.raises(CommandError, match="open with no configured key"):
            call_command("rotate_encryption_keys", stdout=StringIO(), stderr=err)
        assert "contacts.Note id=" in err.getvalue() and KEY_A not in err.getvalue()


def test_bad_arguments_are_refused():
    with pytest.raises(CommandError, match="--after needs --model"):
        _rotate("--after", "5")
    with pytest.raises(CommandError, match="not a model with encrypted fields"):
        _rotate("--model", "contacts.contact")
    with pytest.raises(CommandError, match="at least 1"):
        _rotate("--batch-size", "0")


def test_a_resume_position_that_is_no_primary_key_is_refused_without_a_traceback():
    """`--after abc` reached PostgreSQL's bigint cast: a DataError traceback."""
    with pytest.raises(CommandError, match=r"--after 'abc' is not a primary key of contacts\.note"):
        _rotate("--dry-run", "--model", "contacts.note", "--after", "abc")
