import django_filters

from contacts.lifecycle import Stage
from contacts.models import Contact, Ticket
from contacts.selectors import contact_search
from crm_platform.api.filters import UtcIsoDateTimeFilter


class ContactFilter(django_filters.FilterSet):
    email = django_filters.CharFilter(method="filter_email")
    external_id = django_filters.CharFilter()
    stage = django_filters.ChoiceFilter(field_name="lifecycle_stage", choices=Stage.choices)
    tier = django_filters.ChoiceFilter(field_name="engagement_tier", choices=Contact.Tier.choices)
    owner = django_filters.NumberFilter(field_name="owner_id")
    source = django_filters.CharFilter()
    updated_since = UtcIsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")
    tag = django_filters.CharFilter(method="filter_tag")
    q = django_filters.CharFilter(method="filter_q", label="Search email, name or phone")

    class Meta:
        model = Contact
        fields = ["email", "external_id", "stage", "tier", "owner", "source", "updated_since", "tag", "q"]

    def filter_email(self, queryset, name, value):
        return queryset.filter(email=value.strip().lower())

    def filter_tag(self, queryset, name, value):
        return queryset.filter(tags__contains=[value.strip().lower()])

    def filter_q(self, queryset, name, value):
        return contact_search(queryset, value)


class TicketFilter(django_filters.FilterSet):
    contact = django_filters.NumberFilter(field_name="contact_id")
    status = django_filters.ChoiceFilter(choices=Ticket.Status.choices)
    priority = django_filters.ChoiceFilter(choices=Ticket.Priority.choices)
    owner = django_filters.NumberFilter(field_name="owner_id")

    class Meta:
        model = Ticket
        fields = ["contact", "status", "priority", "owner"]
