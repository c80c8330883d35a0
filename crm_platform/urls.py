from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from compliance.audit_apis import SeedAuditLogApi
from compliance.privacy_apis import SeedUserEraseApi
from crm_platform import health
from crm_platform.admin_tools import dashboard_view
from crm_platform.api.permissions import PublicRoute
from crm_platform.api.throttling import AddressRateThrottle
from crm_platform.apis import MeApi
from integrations.inbound_apis import AppEventApi
from integrations.providers.hubspot.apis import HubSpotWebhookApi

_public = {"permission_classes": [PublicRoute], "authentication_classes": [], "throttle_classes": [AddressRateThrottle]}

api_v1 = [
    # The event routes first: they take the most requests, and Django tries patterns in order
    # (each include passed over costs a walk of its patterns). No other app's routes overlap them.
    path("", include("integrations.urls")),
    path("me", MeApi.as_view(), name="me"),
    *[path("", include(f"{app}.urls")) for app in ("contacts", "leads", "campaigns", "scheduling", "coaching")],
    path("", include("compliance.urls")),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_v1, "api"), namespace="v1")),
    # Seed 003's routes, served exactly as the assessment platform calls them.
    path("api/integrations/crm/", include("leads.urls_integrations")),
    path("api/integrations/webhooks/", include("integrations.urls_seed003")),
    # Seed 002's app webhook, served exactly as the YAHealthy app calls it.
    path("api/crm/webhooks/app-event", AppEventApi.as_view(), name="seed002-app-event"),
    # Provider webhooks: signed by the provider, so public to API keys.
    path("api/integrations/hubspot/webhooks", HubSpotWebhookApi.as_view(), name="hubspot-webhooks"),
    path("api/crm/audit-log/<str:user_id>", SeedAuditLogApi.as_view(), name="seed002-audit-log"),
    # Seed 002's GDPR erasure (DELETE only; userId is the contact's app user id).
    path("api/crm/users/<str:user_id>", SeedUserEraseApi.as_view(), name="seed002-user"),
    path("api/schema/", SpectacularAPIView.as_view(**_public), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema", **_public), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema", **_public), name="api-redoc"),
]

# Errors raised outside JsonErrorMiddleware (a middleware before it): JSON too, but in the admin.
handler400 = "crm_platform.error_views.bad_request"
handler403 = "crm_platform.error_views.permission_denied"
handler404 = "crm_platform.error_views.page_not_found"
handler500 = "crm_platform.error_views.server_error"
