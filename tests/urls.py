"""The product's URLconf plus a few views that exercise the API plumbing (scopes, errors,
pagination, filters) until the domain apps bring real ones."""

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import path
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance.models import AuditEvent
from crm_platform.errors import ConflictError
from crm_platform.idempotency import idempotent
from crm_platform.urls import handler400, handler403, handler404, handler500  # noqa: F401 - the product's
from crm_platform.urls import urlpatterns as product_urlpatterns


class EchoApi(APIView):
    required_scopes = {"GET": "contacts:read", "POST": "contacts:write"}

    class InputSerializer(serializers.Serializer):
        email = serializers.EmailField()
        age = serializers.IntegerField(min_value=0)

    def get(self, request):
        return Response({"ok": True})

    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(data.validated_data, status=201)


class PhiApi(APIView):
    required_scopes = {"GET": "phi:read"}

    def get(self, request):
        return Response({"ok": True})


class UndeclaredApi(APIView):
    def get(self, request):
        return Response({"ok": True})


class BoomApi(APIView):
    required_scopes = {"GET": "contacts:read"}

    def get(self, request):
        raise RuntimeError("boom")


class DomainErrorApi(APIView):
    """Raises what services raise, as a service called from a view would."""

    required_scopes = {"POST": "contacts:write"}

    def post(self, request):
        if request.data.get("kind") == "conflict":
            raise ConflictError("Email and user id name two contacts.", fields={"contacts": [1, 2]})
        raise DjangoValidationError({"email": ["Already taken."]})


class IdempotentRequiredApi(APIView):
    required_scopes = {"POST": "events:write"}

    @idempotent(required=True)
    def post(self, request):
        return Response({"echo": request.data}, status=202)


class AuditFilter(django_filters.FilterSet):
    class Meta:
        model = AuditEvent
        fields = ["action", "actor_kind"]


class AuditListApi(generics.ListAPIView):
    scope_resource = "contacts"
    queryset = AuditEvent.objects.all()
    filterset_class = AuditFilter

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = AuditEvent
            fields = ["id", "action", "actor_kind"]

    serializer_class = OutputSerializer


urlpatterns = [
    *product_urlpatterns,
    path("t/echo", EchoApi.as_view()),
    path("t/phi", PhiApi.as_view()),
    path("t/undeclared", UndeclaredApi.as_view()),
    path("t/boom", BoomApi.as_view()),
    path("t/audit", AuditListApi.as_view()),
    path("t/domain-error", DomainErrorApi.as_view()),
    path("t/idempotent-required", IdempotentRequiredApi.as_view()),
]
