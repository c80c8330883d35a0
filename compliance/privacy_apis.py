"""Consent, restriction, export and erasure over HTTP. Thin views: parse, call one service,
serialize. Routes in compliance/urls.py (under /api/v1/) and seed 002's DELETE
/api/crm/users/:userId (crm_platform/urls.py)."""

from __future__ import annotations

from django.apps import apps
from django.db import transaction
from django.http import Http404, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance import consent, gdpr
from compliance.models_privacy import Consent, ExportBundle, ProcessingRestriction
from compliance.subjects import subject_model
from crm_platform.actor import Actor
from crm_platform.api.errors import error_body
from crm_platform.api.permissions import has_scope
from crm_platform.api.schema import error_response
from crm_platform.api.scopes import PHI_READ
from crm_platform.idempotency import idempotent

HISTORY_LIMIT = 200


def _contact(pk: int):
    contact = apps.get_model(subject_model().model_label).objects.filter(pk=pk).first()
    if contact is None:
        raise NotFound(f"No contact {pk}.")
    return contact


class ConsentOutput(serializers.ModelSerializer):
    class Meta:
        model = Consent
        fields = [
            "id",
            "purpose",
            "channel",
            "third_party",
            "granted",
            "source",
            "text_version",
            "granted_at",
            "revoked_at",
            "recorded_at",
        ]


class RestrictionOutput(serializers.ModelSerializer):
    active = serializers.BooleanField(source="is_active")

    class Meta:
        model = ProcessingRestriction
        fields = ["id", "active", "reason", "placed_at", "lifted_at"]


class ConsentsOutput(serializers.Serializer):
    contact = serializers.IntegerField()
    restricted = serializers.BooleanField(help_text="Processing restricted (GDPR Art. 18).")
    consents = ConsentOutput(many=True, help_text="The current decision per purpose, channel and third party.")
    history = ConsentOutput(many=True, help_text=f"Every decision, newest first (at most {HISTORY_LIMIT}).")


class RestrictionStateOutput(serializers.Serializer):
    contact = serializers.IntegerField()
    restricted = serializers.BooleanField()
    restriction = RestrictionOutput(allow_null=True, help_text="The latest restriction, lifted or not; null if none.")


class ExportBundleOutput(serializers.Serializer):
    id = serializers.UUIDField()
    contact = serializers.IntegerField(allow_null=True, help_text="Null once the contact is erased.")
    status = serializers.ChoiceField(choices=ExportBundle.Status.choices)
    requested_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    tables = serializers.DictField(child=serializers.IntegerField(), help_text="Rows exported per table.")
    size = serializers.IntegerField(allow_null=True, help_text="Bytes of the zip.")
    download_url = serializers.URLField(allow_null=True, help_text="A signed link, once ready.")


class ErasureOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["erased"])
    contact = serializers.IntegerField()
    contacts = serializers.ListField(
        child=serializers.IntegerField(), help_text="Every contact row erased (merged-away ones too)."
    )
    erased_at = serializers.DateTimeField()
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Rows deleted or anonymised per table.")
    provider_deletion = serializers.ChoiceField(choices=["queued"])


class SeedUserEraseOutput(serializers.Serializer):
    class Meta:
        ref_name = "SeedUserEraseOutput"

    status = serializers.ChoiceField(choices=["success"])
    userId = serializers.CharField()  # seed 002's name
    result = ErasureOutput()


LEGAL_HOLD = "The contact is under legal hold (`legal_hold`): nothing was erased."


def _consents_body(contact) -> dict:
    history = Consent.objects.filter(contact=contact).order_by("-recorded_at", "-id")[:HISTORY_LIMIT]
    return {
        "contact": contact.pk,
        "restricted": consent.is_restricted(contact.pk),
        "consents": ConsentOutput(consent.consent_current(contact=contact), many=True).data,
        "history": ConsentOutput(history, many=True).data,
    }


class ConsentDecisionInput(serializers.Serializer):
    """One decision: a grant or a revocation, with its proof."""

    purpose = serializers.ChoiceField(choices=Consent.Purpose.choices)
    channel = serializers.ChoiceField(choices=Consent.Channel.choices, required=False, allow_blank=True, default="")
    third_party = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    granted = serializers.BooleanField()
    source = serializers.CharField(max_length=100)
    text_version = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    ip = serializers.IPAddressField(required=False, allow_null=True, default=None)
    user_agent = serializers.CharField(max_length=400, required=False, allow_blank=True, default="")


class ConsentsApi(APIView):
    """A contact's consents: the current decision per purpose and channel, and the history."""

    required_scopes = {"GET": "contacts:read", "PUT": "consents:write"}

    class ConsentsInput(serializers.Serializer):
        consents = ConsentDecisionInput(many=True, min_length=1, max_length=50)

    @extend_schema(responses=ConsentsOutput)
    def get(self, request, pk: int):
        return Response(_consents_body(_contact(pk)))

    @extend_schema(
        request=ConsentsInput,
        responses={
            200: OpenApiResponse(ConsentsOutput, description="As GET, after the change"),
            409: error_response("Another change to this consent landed at the same time; try again."),
        },
    )
    def put(self, request, pk: int):
        """Record decisions (each a grant or a revocation with its proof); all or none. A
        decision equal to the current one adds no history row."""
        contact = _contact(pk)
        data = self.ConsentsInput(data=request.data)
        data.is_valid(raise_exception=True)
        decisions = data.validated_data["consents"]
        actor = Actor.from_request(request)
        with transaction.atomic():
            for decision in decisions:
                consent.consent_record(contact=contact, actor=actor, **decision)
        return Response(_consents_body(contact))


class RestrictionApi(APIView):
    """GDPR Art. 18: PUT restricts processing (marketing, provider sync, outbound webhooks, AI)
    until DELETE lifts it; lifting sends the contact's current state to the webhooks once."""

    required_scopes = {"GET": "contacts:read", "PUT": "gdpr:write", "DELETE": "gdpr:write"}

    class RestrictInput(serializers.Serializer):
        reason = serializers.CharField(max_length=300)

    def _body(self, contact) -> dict:
        current = ProcessingRestriction.objects.filter(contact=contact).order_by("-placed_at", "-id").first()
        return {
            "contact": contact.pk,
            "restricted": bool(current and current.is_active),
            "restriction": RestrictionOutput(current).data if current else None,
        }

    @extend_schema(
        responses={200: OpenApiResponse(RestrictionStateOutput, description="Whether processing is restricted")}
    )
    def get(self, request, pk: int):
        return Response(self._body(_contact(pk)))

    @extend_schema(
        request=RestrictInput, responses={200: OpenApiResponse(RestrictionStateOutput, description="The restriction")}
    )
    def put(self, request, pk: int):
        contact = _contact(pk)
        data = self.RestrictInput(data=request.data)
        data.is_valid(raise_exception=True)
        consent.restriction_set(
            contact=contact, reason=data.validated_data["reason"], actor=Actor.from_request(request)
        )
        return Response(self._body(contact))

    @extend_schema(responses={200: OpenApiResponse(RestrictionStateOutput, description="The lifted restriction")})
    def delete(self, request, pk: int):
        contact = _contact(pk)
        consent.restriction_lift(contact=contact, actor=Actor.from_request(request))
        return Response(self._body(contact))


def _bundle_body(request, bundle: ExportBundle) -> dict:
    body = {
        "id": str(bundle.pk),
        "contact": bundle.contact_id,
        "status": bundle.status,
        "requested_at": bundle.requested_at,
        "completed_at": bundle.completed_at,
        "expires_at": bundle.expires_at,
        "tables": bundle.tables,
        "size": bundle.size,
        "download_url": None,
    }
    if bundle.status == ExportBundle.Status.READY:
        path = reverse("v1:export-download", kwargs={"token": gdpr.export_token(bundle)})
        body["download_url"] = request.build_absolute_uri(path)
    return body


def _may_read_the_bundle(request) -> None:
    """An export holds every medical field about the person, unmasked: starting or downloading
    one takes phi:read as well as gdpr:write (the scope `admin` grants the latter, not this)."""
    if not has_scope(request, PHI_READ):
        raise PermissionDenied(f"An export holds the person's medical data: it takes the scope '{PHI_READ}' too.")


class ContactExportApi(APIView):
    """Start a GDPR/CCPA export of everything about the contact: 202 with the bundle's id; poll
    GET /api/v1/exports/{id} for the signed download link. Needs gdpr:write and phi:read."""

    required_scopes = {"POST": "gdpr:write"}

    @extend_schema(request=None, responses={202: OpenApiResponse(ExportBundleOutput, description="The pending export")})
    @idempotent()
    def post(self, request, pk: int):
        _may_read_the_bundle(request)
        bundle = gdpr.export_request(contact=_contact(pk), actor=Actor.from_request(request))
        return Response(_bundle_body(request, bundle), status=status.HTTP_202_ACCEPTED)


class ExportStatusApi(APIView):
    required_scopes = {"GET": "gdpr:write"}

    @extend_schema(
        responses={200: OpenApiResponse(ExportBundleOutput, description="The export; download_url once ready")}
    )
    def get(self, request, bundle_id):
        bundle = ExportBundle.objects.filter(pk=bundle_id).first()
        if bundle is None:
            raise NotFound("No such export (expired bundles are purged).")
        return Response(_bundle_body(request, bundle))


class ExportDownloadApi(APIView):
    """The zip (export.json + one CSV per table), for a signed link that has not expired. The
    link alone is not enough: the caller also needs gdpr:write and phi:read."""

    required_scopes = {"GET": "gdpr:write"}

    @extend_schema(
        responses={
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The export zip"),
            404: error_response("No such export (a forged token, or a purged bundle)."),
            409: error_response("The export is still being built, or failed."),
            410: error_response(
                "The link or the export has expired, or it can no longer be read; request a new export."
            ),
        }
    )
    def get(self, request, token: str):
        _may_read_the_bundle(request)
        try:
            bundle, data = gdpr.export_open(token=token, actor=Actor.from_request(request))
        except gdpr.ExportLinkError as exc:
            code = {404: "not_found", 409: "conflict", 410: "gone"}[exc.status]
            return Response(error_body(code, exc.message), status=exc.status)
        response = HttpResponse(data, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="export-{bundle.pk}.zip"'
        response["Cache-Control"] = "no-store"
        return response


def _erase(actor: Actor, **lookup) -> dict:
    try:
        if "external_id" in lookup:
            erasure, _ = gdpr.contact_erase_by_external_id(actor=actor, **lookup)
        else:
            erasure, _ = gdpr.contact_erase(actor=actor, **lookup)
    except gdpr.SubjectNotFound:
        raise Http404 from None
    return gdpr.erasure_outcome(erasure)


class ContactEraseApi(APIView):
    """Erase everything about the contact (GDPR Art. 17 / CCPA delete). 409 under legal hold;
    404 for an unknown contact; a repeat answers like the first."""

    required_scopes = {"POST": "gdpr:write"}

    @extend_schema(
        request=None,
        responses={
            200: OpenApiResponse(ErasureOutput, description="The erasure's outcome"),
            409: error_response(f"{LEGAL_HOLD} Or a request with this Idempotency-Key is still running."),
        },
    )
    @idempotent()
    def post(self, request, pk: int):
        return Response(_erase(Actor.from_request(request), contact_id=pk))


class SeedUserEraseApi(APIView):
    """Seed 002: DELETE /api/crm/users/:userId (userId: the app user id) erases the user."""

    required_scopes = {"DELETE": "gdpr:write"}

    @extend_schema(responses={200: SeedUserEraseOutput, 409: error_response(LEGAL_HOLD)})
    def delete(self, request, user_id: str):
        result = _erase(Actor.from_request(request), external_id=user_id)
        return Response({"status": "success", "userId": user_id, "result": result})
