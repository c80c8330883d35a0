"""The leads API: thin views that parse input, call one service or selector, and serialize.

Leads answer to the `leads:*` scopes, deals, pipelines and their stats to `deals:*`."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts.lifecycle import FUNNELS
from contacts.models import Activity, Company, Contact
from crm_platform.actor import Actor
from crm_platform.api.pagination import TimelinePagination
from crm_platform.api.phi import phi_context
from crm_platform.api.schema import error_response
from crm_platform.idempotency import idempotent
from leads import selectors, services
from leads import serializers as out
from leads.filters import DealFilter, LeadFilter
from leads.models import Deal, Lead, Pipeline


def _valid(serializer_class, data, *, partial: bool = False) -> dict:
    serializer = serializer_class(data=data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


OPEN_LEAD_EXISTS = error_response("The person has another open lead (`open_lead_exists`).")


def _staff_users():
    return get_user_model().objects.filter(is_staff=True, is_active=True)


class StatsFilterSerializer(serializers.Serializer):
    owner = serializers.IntegerField(required=False, min_value=1, help_text="Only this owner's deals.")
    since = serializers.DateTimeField(required=False, help_text="Deals created at or after (ISO 8601).")
    until = serializers.DateTimeField(required=False, help_text="Deals created before (ISO 8601).")

    def validate(self, attrs):
        if attrs.get("since") and attrs.get("until") and attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError({"until": ["Must be after since."]})
        return attrs


# ----------------------------------------------------------------------------- leads


class LeadListApi(generics.ListAPIView):
    """Leads, newest first (filters: status, source, owner, email, created_since, q).
    POST captures a lead: the contact is found or created by email or external_id, and an
    open lead of theirs is reused rather than duplicated."""

    scope_resource = "leads"
    serializer_class = out.LeadOutput
    filterset_class = LeadFilter

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "LeadCaptureInput"

        email = serializers.EmailField(max_length=254, required=False, allow_null=True)
        external_id = serializers.CharField(max_length=128, required=False, allow_null=True)
        source = serializers.ChoiceField(choices=Lead.Source.choices)
        first_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
        last_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
        phone = serializers.CharField(max_length=40, required=False, allow_blank=True)
        city = serializers.CharField(max_length=100, required=False, allow_blank=True)
        region = serializers.CharField(max_length=100, required=False, allow_blank=True)
        country = serializers.CharField(max_length=2, required=False, allow_blank=True)
        time_zone = serializers.CharField(max_length=64, required=False, allow_blank=True)
        language = serializers.CharField(max_length=16, required=False, allow_blank=True)
        assessment = serializers.DictField(required=False, allow_null=True, help_text="Assessment results.")
        persona = serializers.CharField(max_length=100, required=False, allow_blank=True)
        owner = serializers.PrimaryKeyRelatedField(queryset=_staff_users(), required=False, allow_null=True)
        utm_source = serializers.CharField(max_length=100, required=False, allow_blank=True)
        utm_medium = serializers.CharField(max_length=100, required=False, allow_blank=True)
        utm_campaign = serializers.CharField(max_length=100, required=False, allow_blank=True)
        utm_term = serializers.CharField(max_length=100, required=False, allow_blank=True)
        utm_content = serializers.CharField(max_length=100, required=False, allow_blank=True)

    def get_queryset(self):
        return selectors.lead_list()

    @extend_schema(request=InputSerializer, responses={201: out.LeadOutput}, summary="Capture a lead")
    @idempotent()
    def post(self, request):
        data = _valid(self.InputSerializer, request.data)
        lead = services.lead_capture(actor=Actor.from_request(request), **data)
        return Response(out.LeadOutput(lead, context=phi_context(request)).data, status=status.HTTP_201_CREATED)


class LeadDetailApi(APIView):
    scope_resource = "leads"

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "LeadUpdateInput"

        status = serializers.ChoiceField(choices=Lead.Status.choices, required=False)
        reason = serializers.CharField(max_length=200, required=False, allow_blank=True)
        owner = serializers.PrimaryKeyRelatedField(queryset=_staff_users(), required=False, allow_null=True)

    @extend_schema(responses=out.LeadOutput)
    def get(self, request, pk: int):
        lead = get_object_or_404(selectors.lead_list(), pk=pk)
        return Response(out.LeadOutput(lead, context=phi_context(request)).data)

    @extend_schema(
        request=InputSerializer,
        responses={200: out.LeadOutput, 409: OPEN_LEAD_EXISTS},
        summary="Change a lead's status or owner",
    )
    def patch(self, request, pk: int):
        lead = get_object_or_404(Lead, pk=pk)
        data = _valid(self.InputSerializer, request.data, partial=True)
        lead = services.lead_update(lead=lead, actor=Actor.from_request(request), **data)
        return Response(out.LeadOutput(lead, context=phi_context(request)).data)


# ----------------------------------------------------------------------------- deals


class DealListApi(generics.ListAPIView):
    """Deals, newest first (filters: pipeline, stage id or key, owner, contact). POST opens a
    deal; entering its stage fires that stage's automations."""

    scope_resource = "deals"
    serializer_class = out.DealOutput
    filterset_class = DealFilter

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "DealCreateInput"

        name = serializers.CharField(max_length=200)
        amount = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False)
        currency = serializers.CharField(
            min_length=3, max_length=3, required=False, help_text="ISO 4217 code; default: the pipeline's currency."
        )
        close_date = serializers.DateField(required=False, allow_null=True)
        pipeline = serializers.PrimaryKeyRelatedField(queryset=Pipeline.objects.all(), required=False)
        stage = serializers.CharField(max_length=50, required=False, help_text="Stage key (e.g. proposal) or id.")
        owner = serializers.PrimaryKeyRelatedField(queryset=_staff_users(), required=False, allow_null=True)
        contact = serializers.PrimaryKeyRelatedField(queryset=Contact.objects.all(), required=False, allow_null=True)
        company = serializers.PrimaryKeyRelatedField(queryset=Company.objects.all(), required=False, allow_null=True)
        plan = serializers.CharField(max_length=100, required=False, allow_blank=True)

    def get_queryset(self):
        return selectors.deal_list()

    @extend_schema(request=InputSerializer, responses={201: out.DealOutput}, summary="Open a deal")
    @idempotent()
    def post(self, request):
        data = _valid(self.InputSerializer, request.data)
        if "stage" in data:
            pipeline = data.get("pipeline") or services.default_pipeline()
            data["pipeline"] = pipeline
            data["stage"] = selectors.stage_resolve(pipeline_id=pipeline.pk, value=data["stage"])
        deal = services.deal_create(actor=Actor.from_request(request), **data)
        return Response(out.DealOutput(deal, context=phi_context(request)).data, status=status.HTTP_201_CREATED)


class DealDetailApi(APIView):
    scope_resource = "deals"

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "DealUpdateInput"

        name = serializers.CharField(max_length=200, required=False)
        amount = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, required=False)
        currency = serializers.CharField(min_length=3, max_length=3, required=False)
        close_date = serializers.DateField(required=False, allow_null=True)
        owner = serializers.PrimaryKeyRelatedField(queryset=_staff_users(), required=False, allow_null=True)
        contact = serializers.PrimaryKeyRelatedField(queryset=Contact.objects.all(), required=False, allow_null=True)
        company = serializers.PrimaryKeyRelatedField(queryset=Company.objects.all(), required=False, allow_null=True)
        plan = serializers.CharField(max_length=100, required=False, allow_blank=True)

        def validate(self, attrs):
            moved = sorted({"stage", "pipeline"} & set(self.initial_data))
            if moved:
                raise serializers.ValidationError(
                    {name: ["A deal changes stage through POST /api/v1/deals/{id}/move."] for name in moved}
                )
            return attrs

    @extend_schema(responses=out.DealOutput)
    def get(self, request, pk: int):
        deal = get_object_or_404(selectors.deal_list(), pk=pk)
        return Response(out.DealOutput(deal, context=phi_context(request)).data)

    @extend_schema(request=InputSerializer, responses=out.DealOutput, summary="Change a deal (not its stage)")
    def patch(self, request, pk: int):
        deal = get_object_or_404(Deal, pk=pk)
        data = _valid(self.InputSerializer, request.data, partial=True)
        deal = services.deal_update(deal=deal, actor=Actor.from_request(request), **data)
        return Response(out.DealOutput(deal, context=phi_context(request)).data)


class DealMoveApi(APIView):
    """Move a deal to another stage of its pipeline (by key or id); fires the stage's
    automations (closed won: Active Customer, subscription, onboarding; closed lost: feedback
    survey; negotiation: the owner's manager hears of it)."""

    scope_resource = "deals"

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "DealMoveInput"

        stage = serializers.CharField(max_length=50, help_text="Stage key (e.g. closedwon) or id.")

    @extend_schema(request=InputSerializer, responses=out.DealOutput, summary="Move a deal to a stage")
    @idempotent()
    def post(self, request, pk: int):
        deal = get_object_or_404(Deal, pk=pk)
        data = _valid(self.InputSerializer, request.data)
        stage = selectors.stage_resolve(pipeline_id=deal.pipeline_id, value=data["stage"])
        deal = services.deal_move_stage(deal=deal, stage=stage, actor=Actor.from_request(request))
        return Response(out.DealOutput(deal, context=phi_context(request)).data)


# ----------------------------------------------------------------------------- pipelines, stats, funnels


class PipelineListApi(generics.ListAPIView):
    scope_resource = "deals"
    serializer_class = out.PipelineOutput

    def get_queryset(self):
        return Pipeline.objects.prefetch_related("stages")


class PipelineStatsApi(APIView):
    """Per stage: deals, amount, weighted amount and average days in stage; the win rate."""

    scope_resource = "deals"

    @extend_schema(parameters=[StatsFilterSerializer], responses=out.PipelineStatsOutput)
    def get(self, request, pk: int):
        pipeline = get_object_or_404(Pipeline, pk=pk)
        filters = _valid(StatsFilterSerializer, request.query_params)
        return Response(out.PipelineStatsOutput(selectors.pipeline_stats(pipeline=pipeline, **filters)).data)


class FunnelApi(APIView):
    """A lifecycle funnel (seed 004) over [since, until) (default: the last 90 days): contacts
    entering the from-stage, how many reached the to-stage, the rate and the median days."""

    scope_resource = "leads"

    class FilterSerializer(serializers.Serializer):
        class Meta:
            ref_name = "FunnelFilter"

        since = serializers.DateTimeField(required=False)
        until = serializers.DateTimeField(required=False)
        source = serializers.CharField(max_length=50, required=False, help_text="The contacts' source.")
        owner = serializers.IntegerField(required=False, min_value=1, help_text="The contacts' owner.")

        def validate(self, attrs):
            attrs.setdefault("until", timezone.now())
            if "since" not in attrs:
                try:
                    attrs["since"] = attrs["until"] - dt.timedelta(days=90)
                except OverflowError:  # an until in year 1: no 90 days before it
                    raise serializers.ValidationError(
                        {"until": ["Too early for the default 90 days before it; give since."]}
                    ) from None
            if attrs["since"] >= attrs["until"]:
                raise serializers.ValidationError({"until": ["Must be after since."]})
            return attrs

    @extend_schema(
        parameters=[
            FilterSerializer,
            OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(FUNNELS)),
        ],
        responses=out.FunnelOutput,
    )
    def get(self, request, name: str):
        if name not in FUNNELS:
            raise NotFound(f"No funnel {name!r}; there are {', '.join(FUNNELS)}.")
        filters = _valid(self.FilterSerializer, request.query_params)
        return Response(out.FunnelOutput(selectors.funnels(name=name, **filters)).data)


# ----------------------------------------------------------------------------- seed 003's routes, by email


class CrmLeadByEmailApi(APIView):
    """The lead of this email: its open lead, else its latest."""

    scope_resource = "leads"

    @extend_schema(responses=out.LeadOutput, summary="Get lead by email")
    def get(self, request, email: str):
        lead = selectors.lead_latest_for_email(email=email)
        return Response(out.LeadOutput(lead, context=phi_context(request)).data)


class CrmLeadActivitiesApi(generics.ListAPIView):
    """The timeline of the contact behind this email's lead, newest first."""

    scope_resource = "leads"
    serializer_class = out.CrmActivityOutput

    pagination_class = TimelinePagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no email to look up
            return Activity.objects.none()
        lead = selectors.lead_latest_for_email(email=self.kwargs["email"])
        return selectors.activities_for_contact(contact_id=lead.contact_id)

    @extend_schema(summary="Get lead activities")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class CrmLeadStatusApi(APIView):
    scope_resource = "leads"

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CrmLeadStatusInput"

        status = serializers.ChoiceField(choices=Lead.Status.choices)
        reason = serializers.CharField(max_length=200, required=False, allow_blank=True)

    @extend_schema(
        request=InputSerializer, responses={200: out.LeadOutput, 409: OPEN_LEAD_EXISTS}, summary="Update lead status"
    )
    def put(self, request, email: str):
        lead = selectors.lead_latest_for_email(email=email)
        data = _valid(self.InputSerializer, request.data)
        lead = services.lead_set_status(lead=lead, actor=Actor.from_request(request), **data)
        return Response(out.LeadOutput(lead, context=phi_context(request)).data)


class CrmLeadSearchApi(LeadListApi):
    """Search leads: ?q= (email, name or phone), status, source."""

    http_method_names = ["get", "head", "options"]

    @extend_schema(summary="Search leads")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class CrmPipelineStatsApi(APIView):
    """Leads per status, and the default pipeline's stats."""

    scope_resource = "deals"

    @extend_schema(
        parameters=[StatsFilterSerializer], responses=out.CrmPipelineStatsOutput, summary="Get pipeline statistics"
    )
    def get(self, request):
        filters = _valid(StatsFilterSerializer, request.query_params)
        stats = {
            "leads": selectors.lead_status_counts(owner=filters.get("owner")),
            "deals": selectors.pipeline_stats(pipeline=services.default_pipeline(), **filters),
        }
        return Response(out.CrmPipelineStatsOutput(stats).data)
