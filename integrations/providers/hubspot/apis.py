"""HubSpot's webhook endpoint. Public (no API key): HubSpot's v3 signature is the authentication."""

from __future__ import annotations

import io

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.response import Response
from rest_framework.views import APIView

from crm_platform.api.fastjson import FastJSONParser
from crm_platform.api.permissions import PublicRoute
from crm_platform.api.throttling import AddressRateThrottle
from integrations.providers.hubspot.webhooks import SignatureError, events_handle, signature_verify


def _error(code: str, message: str, http_status: int) -> Response:
    return Response({"error": {"code": code, "message": message, "fields": {}}}, status=http_status)


class HubSpotWebhookOutput(serializers.Serializer):
    """How many of the batch's events were erased, named no contact we know, were refused (legal
    hold) or were not privacy deletions."""

    erased = serializers.IntegerField()
    unknown = serializers.IntegerField()
    refused = serializers.IntegerField()
    ignored = serializers.IntegerField()


class HubSpotWebhookApi(APIView):
    """`POST /api/integrations/hubspot/webhooks`: a batch of HubSpot events (an array), signed."""

    authentication_classes = []
    permission_classes = [PublicRoute]
    throttle_classes = [AddressRateThrottle]

    @extend_schema(
        request=None,
        responses={
            200: HubSpotWebhookOutput,
            400: OpenApiResponse(description="The body is not a JSON array of event objects."),
            401: OpenApiResponse(description="The X-HubSpot-Signature-v3 signature is missing, wrong or stale."),
            413: OpenApiResponse(description="The request body is too large."),
        },
    )
    def post(self, request):
        body = request.body  # the raw bytes, as signed (read before anything parses them)
        try:
            signature_verify(
                method=request.method,
                uri=request.build_absolute_uri(),
                body=body,
                timestamp=request.headers.get("X-HubSpot-Request-Timestamp"),
                signature=request.headers.get("X-HubSpot-Signature-v3"),
            )
        except SignatureError as exc:
            return _error("bad_signature", str(exc), status.HTTP_401_UNAUTHORIZED)
        try:  # the API's own parser: it refuses, with a 400, what no column or digest can hold
            events = FastJSONParser().parse(io.BytesIO(body))
        except ParseError as exc:
            return _error("parse_error", f"The body is not JSON we accept ({exc.detail}).", status.HTTP_400_BAD_REQUEST)
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            return _error("invalid", "HubSpot sends an array of event objects.", status.HTTP_400_BAD_REQUEST)
        return Response(events_handle(events), status=status.HTTP_200_OK)
