"""The audit log over the API: GET /api/v1/audit and seed 002's GET /api/crm/audit-log/:userId."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance.audit_selectors import audit_event_list, audit_events_for_contact
from compliance.models import AUDIT_COLUMNS, AuditEvent, BreakGlassGrant

AUDIT_READ = "audit:read"
SEED_ACTOR_TYPES = {"ai": "ai_assistant"}  # seed 002 names the AI actor "ai_assistant"


class AuditEventOutput(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = list(AUDIT_COLUMNS)
        read_only_fields = fields


class SeedAuditEntryOutput(serializers.Serializer):
    """One row in the shape of seed 002's crm_audit_log."""

    id = serializers.IntegerField()
    user_id = serializers.CharField()
    actor_type = serializers.CharField(help_text="user, api_key, system, ai_assistant, ...")
    actor_id = serializers.CharField()
    action = serializers.CharField()
    entity_type = serializers.CharField()
    entity_id = serializers.CharField()
    changes = serializers.JSONField()
    request_id = serializers.CharField()
    ip_address = serializers.IPAddressField(allow_null=True)
    created_at = serializers.DateTimeField()
    chain_seq = serializers.IntegerField(allow_null=True, help_text="Null until the row is sealed into the chain.")
    hash = serializers.CharField(allow_null=True)


class SeedAuditLogOutput(serializers.Serializer):
    status = serializers.ChoiceField(choices=["success"])
    userId = serializers.CharField()  # seed 002's name
    data = SeedAuditEntryOutput(many=True, help_text="Newest first.")


class AuditEventListApi(generics.ListAPIView):
    """Audit events, newest first, cursor-paginated. Filters: object=<type:id>
    (contacts.contact:12), actor=<kind:id> (user:5), since=<ISO date or date-time>, action."""

    required_scopes = {"GET": AUDIT_READ}
    serializer_class = AuditEventOutput

    def get_queryset(self):
        params = self.request.query_params
        return audit_event_list(
            object=params.get("object", ""),
            actor=params.get("actor", ""),
            since=params.get("since", ""),
            action=params.get("action", ""),
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("object", str, description="<object type>:<id>, e.g. contacts.contact:12"),
            OpenApiParameter("actor", str, description="<actor kind>:<id>, e.g. user:5 or api_key:3"),
            OpenApiParameter("since", str, description="ISO 8601 date or date-time"),
            OpenApiParameter("action", str, description="e.g. phi.read"),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class SeedAuditLogApi(APIView):
    """Seed 002: GET /api/crm/audit-log/:userId (userId: the app's user id, our contact's
    external id): that person's audit trail, newest first, in the seed's envelope
    `{"status": "success", "userId", "data": [...]}` with crm_audit_log's column names.
    `?limit=` (default 100, at most 1000)."""

    required_scopes = {"GET": AUDIT_READ}

    @extend_schema(
        parameters=[
            OpenApiParameter("limit", int, description="How many rows, newest first (default 100; read as 1 to 1000).")
        ],
        responses=SeedAuditLogOutput,
        summary="Get audit trail (seed 002)",
    )
    def get(self, request, user_id: str):
        contact_model = BreakGlassGrant._meta.get_field("contact").related_model
        contact_id = contact_model.objects.filter(external_id=user_id).values_list("pk", flat=True).first()
        if contact_id is None:
            raise Http404("No user with this id.")
        try:
            limit = min(max(int(request.query_params.get("limit", 100)), 1), 1000)
        except ValueError:
            raise ValidationError({"limit": ["A whole number from 1 to 1000."]}) from None
        events = audit_events_for_contact(contact_id=contact_id)[:limit]
        data = [
            {
                "id": event.pk,
                "user_id": user_id,
                "actor_type": SEED_ACTOR_TYPES.get(event.actor_kind, event.actor_kind),
                "actor_id": event.actor_id,
                "action": event.action,
                "entity_type": event.object_type,
                "entity_id": event.object_id,
                "changes": event.changes,
                "request_id": event.request_id,
                "ip_address": event.ip,
                "created_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
                "chain_seq": event.chain_seq,
                "hash": event.hash,
            }
            for event in events
        ]
        return Response({"status": "success", "userId": user_id, "data": data})
