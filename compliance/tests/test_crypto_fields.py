"""Encrypted model fields: tokens in the column, plaintext in the code, lookups refused."""

import pytest
from django.core.exceptions import FieldError
from django.db import connection, models
from django.test.utils import isolate_apps

from compliance import crypto
from compliance.fields import EncryptedFieldMixin, HmacField
from contacts import services
from contacts.models import Note, Order, Subscription, Ticket
from contacts.tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


def _raw(model, pk, column):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {model._meta.db_table} WHERE id = %s", [pk])  # noqa: S608
        return cursor.fetchone()[0]


def test_notes_written_through_the_api_are_tokens_in_the_database(key_client):
    contact = ContactFactory()
    writer = key_client(["contacts:write", "contacts:read", "phi:read"])
    created = writer.post(
        "/api/v1/notes", {"contact": contact.pk, "body": "HbA1c 9.1, starting metformin"}, format="json"
    )
    assert created.status_code == 201, created.content
    assert created.json()["body"] == "HbA1c 9.1, starting metformin"
    stored = _raw(Note, created.json()["id"], "body")
    assert "metformin" not in stored and crypto.decrypt(stored) == "HbA1c 9.1, starting metformin"
    listed = writer.get(f"/api/v1/notes?contact={contact.pk}").json()["results"]
    assert [n["body"] for n in listed] == ["HbA1c 9.1, starting metformin"]


def test_ticket_order_and_subscription_fields_round_trip(system_actor):
    contact = ContactFactory()
    ticket = services.ticket_create(contact=contact, subject="Dose", body="nausea after 1 mg", actor=system_actor)
    ticket = services.ticket_update(ticket=ticket, actor=system_actor, body="nausea after 2 mg")
    order, _ = services.order_record(
        contact=contact, amount="49.00", actor=system_actor, items=[{"sku": "glp1-starter", "quantity": 1}]
    )
    subscription, _ = services.subscription_start(contact=contact, plan="GLP-1 weight care", actor=system_actor)
    assert "2 mg" not in _raw(Ticket, ticket.pk, "body")
    assert "glp1" not in _raw(Order, order.pk, "items")
    assert "GLP-1" not in _raw(Subscription, subscription.pk, "plan")
    assert Ticket.objects.get(pk=ticket.pk).body == "nausea after 2 mg"
    assert Order.objects.get(pk=order.pk).items == [{"sku": "glp1-starter", "quantity": 1}]
    assert Subscription.objects.values_list("plan", flat=True).get(pk=subscription.pk) == "GLP-1 weight care"
    # update() goes through the field too: the column never holds plaintext.
    Ticket.objects.filter(pk=ticket.pk).update(body="resolved")
    assert crypto.looks_encrypted(_raw(Ticket, ticket.pk, "body"))
    assert Ticket.objects.get(pk=ticket.pk).body == "resolved"


@pytest.mark.parametrize(
    "query",
    [
        lambda: Note.objects.filter(body="x"),
        lambda: Note.objects.filter(body__icontains="x"),
        lambda: Ticket.objects.exclude(body__startswith="x"),
        lambda: Order.objects.filter(items__0__sku="x"),
        lambda: Order.objects.filter(items__contains=[{"sku": "x"}]),
        lambda: Subscription.objects.filter(plan__in=["x"]),
    ],
)
def test_lookups_on_tokens_are_refused_with_a_clear_error(query):
    with pytest.raises(FieldError, match="encrypted at rest: it supports only __isnull"):
        list(query())


def test_isnull_still_works(system_actor):
    contact = ContactFactory()
    services.note_create(contact=contact, body="x", actor=system_actor)
    assert Note.objects.filter(body__isnull=False).count() == 1
    assert Note.objects.filter(body__isnull=True).count() == 0


def test_a_token_no_key_opens_is_an_error_not_garbage(system_actor):
    contact = ContactFactory()
    note = services.note_create(contact=contact, body="x", actor=system_actor)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE contacts_note SET body = %s WHERE id = %s", ["plaintext smuggled in", note.pk])
    with pytest.raises(crypto.DecryptionError):
        Note.objects.get(pk=note.pk)


def test_fields_are_found_by_class():
    from compliance.fields import encrypted_fields

    assert {f.name for f in encrypted_fields(Note)} == {"body"}
    assert {f.name for f in encrypted_fields(Order)} == {"items"}
    assert all(isinstance(f, EncryptedFieldMixin) for f in encrypted_fields(Ticket))


def _lower(value: str) -> str:
    return value.strip().lower()


@isolate_apps("compliance")
def test_hmac_field_hashes_the_normalised_source_on_save():
    class Person(models.Model):
        email = models.TextField(blank=True)
        email_hmac = HmacField(source="email", normalize=_lower)

        class Meta:
            app_label = "compliance"

        def __str__(self):
            return self.email

    field = Person._meta.get_field("email_hmac")
    person = Person(email=" Ann@Example.com ")
    assert field.pre_save(person, add=True) == crypto.hmac_digest("ann@example.com") == person.email_hmac
    assert field.digest("ANN@example.com") == person.email_hmac
    person.email = ""
    assert field.pre_save(person, add=False) is None
    _, path, _, kwargs = field.deconstruct()
    assert path == "compliance.fields.HmacField" and kwargs["source"] == "email" and kwargs["normalize"] is _lower


def test_generate_data_writes_order_items_as_tokens():
    from io import StringIO

    from django.core.management import call_command

    call_command(
        "generate_data",
        *("--until", "2025-06-01", "--jobs", "1", "--contacts", "50", "--orders", "20", "--seed", "5"),
        stdout=StringIO(),
    )
    orders = list(Order.objects.filter(external_id__startswith="gen-order-"))
    assert len(orders) == 20 and all(o.items[0]["quantity"] == 1 for o in orders)
    assert crypto.looks_encrypted(_raw(Order, orders[0].pk, "items"))
