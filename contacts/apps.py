from django.apps import AppConfig


class ContactsConfig(AppConfig):
    """Contacts, companies, the activity timeline, notes, tickets, orders and subscriptions."""

    name = "contacts"
