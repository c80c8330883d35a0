from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from crm_platform.api.permissions import ANY_PRINCIPAL
from crm_platform.models import ApiKey


class MeApi(APIView):
    """The caller: an API key (name, scopes) or a staff user."""

    required_scopes = ANY_PRINCIPAL

    class OutputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=["api_key", "user"])
        name = serializers.CharField()
        scopes = serializers.ListField(child=serializers.CharField(), required=False)
        prefix = serializers.CharField(required=False)
        expires_at = serializers.DateTimeField(allow_null=True, required=False)
        id = serializers.IntegerField(required=False)
        is_superuser = serializers.BooleanField(required=False)
        groups = serializers.ListField(child=serializers.CharField(), required=False)

    @extend_schema(responses=OutputSerializer, summary="Who am I")
    def get(self, request):
        if isinstance(request.auth, ApiKey):
            key = request.auth
            data = {
                "kind": "api_key",
                "name": key.name,
                "prefix": key.prefix,
                "scopes": sorted(key.scopes),
                "expires_at": key.expires_at,
            }
        else:
            user = request.user
            data = {
                "kind": "user",
                "id": user.pk,
                "name": user.get_username(),
                "is_superuser": user.is_superuser,
                "groups": sorted(user.groups.values_list("name", flat=True)),
            }
        # The dict already has the documented shape; running it through the serializer would
        # cost a fifth of this hot route's time (bench.api_baseline) and change nothing.
        return Response(data)
