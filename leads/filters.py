"""Query-string filters of the leads API (django-filter). Bad values answer 400."""

import django_filters

from crm_platform.api.filters import UtcIsoDateTimeFilter
from leads.models import Deal, Lead
from leads.selectors import leads_matching


class LeadFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Lead.Status.choices)
    source = django_filters.ChoiceFilter(choices=Lead.Source.choices)
    owner = django_filters.NumberFilter(field_name="owner_id")
    email = django_filters.CharFilter(method="filter_email", label="The contact's email (any case)")
    created_since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    q = django_filters.CharFilter(method="filter_q", label="Search email, name or phone")

    class Meta:
        model = Lead
        fields = ["status", "source", "owner", "email", "created_since", "q"]

    def filter_email(self, queryset, name, value):
        return queryset.filter(contact__email=value.strip().lower())

    def filter_q(self, queryset, name, value):
        return leads_matching(queryset, value)


class DealFilter(django_filters.FilterSet):
    pipeline = django_filters.NumberFilter(field_name="pipeline_id")
    stage = django_filters.CharFilter(method="filter_stage", label="Stage id, or key (e.g. closedwon)")
    owner = django_filters.NumberFilter(field_name="owner_id")
    contact = django_filters.NumberFilter(field_name="contact_id")

    class Meta:
        model = Deal
        fields = ["pipeline", "stage", "owner", "contact"]

    def filter_stage(self, queryset, name, value):
        value = value.strip()
        return (
            queryset.filter(stage_id=int(value))
            if value.isascii() and value.isdecimal()
            else queryset.filter(stage__key=value)
        )
