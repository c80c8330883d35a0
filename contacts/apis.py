"""The contacts API: thin views that parse, call one service or selector, and serialize."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts import selectors, services
from contacts import serializers as s
from contacts.bulk import contacts_bulk_upsert
from contacts.filters import ContactFilter, TicketFilter
from contacts.models import Company, Contact, Note, Order, Subscription, Ticket
from crm_platform.actor import Actor
from crm_platform.api.pagination import TimelinePagination
from crm_platform.api.phi import phi_context
from crm_platform.api.schema import error_response
from crm_platform.api.throttling import BulkRateThrottle, PrincipalRateThrottle
from crm_platform.idempotency import idempotent


def _input(serializer_class, request, *, partial: bool = False) -> dict:
    serializer = serializer_class(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class MayMergeContacts(BasePermission):
    message = "Merging contacts needs the permission contacts.merge_contact."

    def has_permission(self, request, view) -> bool:
        return not getattr(request.user, "is_staff", False) or request.user.has_perm("contacts.merge_contact")


class ContactListApi(generics.ListAPIView):
    """Contacts, newest first; archived ones only with ?archived=true."""

    scope_resource = "contacts"
    staff_permissions = {"POST": "contacts.add_contact"}
    serializer_class = s.ContactOutput
    filterset_class = ContactFilter

    def get_queryset(self):
        archived = self.request.query_params.get("archived") == "true"
        return selectors.contact_list(include_archived=archived, related=False)

    def list(self, request, *args, **kwargs):
        # The hottest read: plain rows in ContactOutput's shape, without a serializer pass per
        # contact (most of this route's time at a million contacts; bench.crm).
        queryset = self.filter_queryset(self.get_queryset()).values(*s.CONTACT_ROW_COLUMNS)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response([s.contact_row(row) for row in page])

    @extend_schema(request=s.ContactCreateInput, responses={201: s.ContactOutput})
    @idempotent()
    def post(self, request):
        data = _input(s.ContactCreateInput, request)
        contact = services.contact_create(actor=Actor.from_request(request), **data)
        return Response(s.ContactOutput(contact).data, status=status.HTTP_201_CREATED)


class ContactDetailApi(APIView):
    scope_resource = "contacts"

    @extend_schema(responses=s.ContactOutput)
    def get(self, request, pk: int):
        contact = get_object_or_404(selectors.contact_list(include_archived=True), pk=pk)
        return Response(s.ContactOutput(contact).data)

    @extend_schema(
        request=s.ContactInput,
        responses={200: s.ContactOutput, 409: error_response("The email or app user id belongs to another contact.")},
    )
    def patch(self, request, pk: int):
        contact = get_object_or_404(Contact, pk=pk)
        data = _input(s.ContactInput, request, partial=True)
        contact = services.contact_update(contact=contact, actor=Actor.from_request(request), **data)
        return Response(s.ContactOutput(contact).data)

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        """Archive (reversible, hidden from lists). Erasure is the GDPR `erase` action."""
        contact = get_object_or_404(Contact, pk=pk)
        services.contact_archive(contact=contact, actor=Actor.from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ContactTimelineApi(generics.ListAPIView):
    scope_resource = "contacts"
    serializer_class = s.ActivityOutput

    pagination_class = TimelinePagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request, no pk
            return selectors.Activity.objects.none()
        contact = get_object_or_404(Contact, pk=self.kwargs["pk"])
        return selectors.contact_timeline(contact=contact)


class ContactMergeApi(APIView):
    """Merge `loser` into this contact (the survivor). Staff also need contacts.merge_contact."""

    scope_resource = "contacts"
    permission_classes = [*APIView.permission_classes, MayMergeContacts]

    @extend_schema(request=s.MergeInput, responses=s.ContactOutput)
    @idempotent()
    def post(self, request, pk: int):
        survivor = get_object_or_404(Contact, pk=pk)
        data = _input(s.MergeInput, request)
        contact = services.contact_merge(survivor=survivor, loser=data["loser"], actor=Actor.from_request(request))
        return Response(s.ContactOutput(contact).data)


class ContactLifecycleApi(APIView):
    scope_resource = "contacts"

    @extend_schema(request=s.LifecycleInput, responses=s.ContactOutput)
    @idempotent()
    def post(self, request, pk: int):
        contact = get_object_or_404(Contact, pk=pk)
        data = _input(s.LifecycleInput, request)
        contact = services.lifecycle_transition(
            contact=contact, to_stage=data["stage"], reason=data["reason"], actor=Actor.from_request(request)
        )
        return Response(s.ContactOutput(contact).data)


class CompanyListApi(generics.ListAPIView):
    scope_resource = "contacts"
    staff_permissions = {"POST": "contacts.add_company"}
    serializer_class = s.CompanyOutput
    queryset = Company.objects.all()
    filterset_fields = ["domain"]

    @extend_schema(request=s.CompanyInput, responses={200: s.CompanyOutput, 201: s.CompanyOutput})
    @idempotent()
    def post(self, request):
        data = _input(s.CompanyInput, request)
        company, created = services.company_upsert(actor=Actor.from_request(request), **data)
        return Response(s.CompanyOutput(company).data, status=201 if created else 200)


class CompanyDetailApi(APIView):
    scope_resource = "contacts"
    staff_permissions = {"PATCH": "contacts.change_company"}

    @extend_schema(responses=s.CompanyOutput)
    def get(self, request, pk: int):
        return Response(s.CompanyOutput(get_object_or_404(Company, pk=pk)).data)

    @extend_schema(
        request=s.CompanyInput,
        responses={200: s.CompanyOutput, 409: error_response("The domain belongs to another company.")},
    )
    def patch(self, request, pk: int):
        company = get_object_or_404(Company, pk=pk)
        data = _input(s.CompanyInput, request, partial=True)
        company = services.company_update(company=company, actor=Actor.from_request(request), **data)
        return Response(s.CompanyOutput(company).data)


class NoteListApi(generics.ListAPIView):
    scope_resource = "contacts"
    staff_permissions = {"POST": "contacts.add_note"}
    serializer_class = s.NoteOutput
    filterset_fields = ["contact"]
    queryset = Note.objects.all()

    @extend_schema(request=s.NoteInput, responses={201: s.NoteOutput})
    @idempotent()
    def post(self, request):
        data = _input(s.NoteInput, request)
        author = request.user if request.user.is_staff else None
        note = services.note_create(actor=Actor.from_request(request), author=author, **data)
        return Response(s.NoteOutput(note, context=phi_context(request)).data, status=201)


class TicketListApi(generics.ListAPIView):
    scope_resource = "tickets"
    serializer_class = s.TicketOutput
    filterset_class = TicketFilter
    queryset = Ticket.objects.all()

    @extend_schema(request=s.TicketInput, responses={201: s.TicketOutput})
    @idempotent()
    def post(self, request):
        data = _input(s.TicketInput, request)
        ticket = services.ticket_create(actor=Actor.from_request(request), **data)
        return Response(s.TicketOutput(ticket, context=phi_context(request)).data, status=201)


class TicketDetailApi(APIView):
    scope_resource = "tickets"

    @extend_schema(responses=s.TicketOutput)
    def get(self, request, pk: int):
        return Response(s.TicketOutput(get_object_or_404(Ticket, pk=pk), context=phi_context(request)).data)

    @extend_schema(request=s.TicketUpdateInput, responses=s.TicketOutput)
    def patch(self, request, pk: int):
        ticket = get_object_or_404(Ticket, pk=pk)
        data = _input(s.TicketUpdateInput, request, partial=True)
        ticket = services.ticket_update(ticket=ticket, actor=Actor.from_request(request), **data)
        return Response(s.TicketOutput(ticket, context=phi_context(request)).data)


class OrderListApi(generics.ListAPIView):
    scope_resource = "contacts"
    staff_permissions = {"POST": "contacts.add_order"}  # the admin records none by hand
    serializer_class = s.OrderOutput
    filterset_fields = ["contact", "status"]
    queryset = Order.objects.all()

    @extend_schema(
        request=s.OrderInput,
        responses={
            200: s.OrderOutput,  # its external id recorded before, with the same amount and currency
            201: s.OrderOutput,
            409: error_response(
                "The external id is another contact's order, or was recorded with another amount or currency "
                "(code order_differs, the fields named)."
            ),
        },
    )
    @idempotent()
    def post(self, request):
        data = _input(s.OrderInput, request)
        order, created = services.order_record(actor=Actor.from_request(request), **data)
        return Response(s.OrderOutput(order, context=phi_context(request)).data, status=201 if created else 200)


class SubscriptionListApi(generics.ListAPIView):
    scope_resource = "contacts"
    staff_permissions = {"POST": "contacts.add_subscription"}
    serializer_class = s.SubscriptionOutput
    filterset_fields = ["contact", "status"]
    queryset = Subscription.objects.all()

    @extend_schema(
        request=s.SubscriptionInput,
        responses={
            200: s.SubscriptionOutput,  # its external id started before, with the same plan, amount and currency
            201: s.SubscriptionOutput,
            409: error_response(
                "The external id is another contact's subscription, or was started with another plan, amount or "
                "currency (code subscription_differs, the fields named)."
            ),
        },
    )
    @idempotent()
    def post(self, request):
        data = _input(s.SubscriptionInput, request)
        subscription, created = services.subscription_start(actor=Actor.from_request(request), **data)
        return Response(
            s.SubscriptionOutput(subscription, context=phi_context(request)).data, status=201 if created else 200
        )


class SubscriptionCancelApi(APIView):
    scope_resource = "contacts"
    staff_permissions = {"POST": "contacts.change_subscription"}

    @extend_schema(request=None, responses=s.SubscriptionOutput)
    @idempotent()
    def post(self, request, pk: int):
        subscription = get_object_or_404(Subscription, pk=pk)
        subscription = services.subscription_cancel(subscription=subscription, actor=Actor.from_request(request))
        return Response(s.SubscriptionOutput(subscription, context=phi_context(request)).data)


class ContactBulkUpsertApi(APIView):
    """Create or update up to 1,000 contacts keyed by email or external_id; one result per row.
    A bad row does not fail the others. Limited per key (API_THROTTLE_BULK_RATE)."""

    scope_resource = "contacts"
    staff_permissions = {"POST": ("contacts.add_contact", "contacts.change_contact")}
    throttle_classes = [PrincipalRateThrottle, BulkRateThrottle]

    @extend_schema(request=s.BulkUpsertInput, responses=s.BulkUpsertOutput)
    @idempotent()
    def post(self, request):
        data = _input(s.BulkUpsertInput, request)
        results = contacts_bulk_upsert(rows=data["contacts"], actor=Actor.from_request(request))
        counts = {key: sum(1 for r in results if r["status"] == key) for key in ("created", "updated", "error")}
        return Response({"results": results, **counts})
