"""Seed 003's webhook routes, served exactly as written, as aliases of /api/v1/webhook-endpoints.

crm_platform.urls mounts them under /api/integrations/webhooks/:

    POST /api/integrations/webhooks/endpoints              register {name, url, events, secret?}
    GET  /api/integrations/webhooks/stats/<endpointId>     one endpoint's delivery statistics
    GET  /api/integrations/webhooks/stats/                 all the caller's endpoints (also without
                                                           the slash: the seed's id is optional)
    POST /api/integrations/webhooks/test/<endpointId>      send a signed test event
"""

from django.urls import path

from integrations import apis

app_name = "webhooks_seed003"

urlpatterns = [
    path("endpoints", apis.SeedWebhookEndpointsApi.as_view(), name="endpoints"),
    path("stats", apis.SeedWebhookStatsBareApi.as_view(), name="stats-all-bare"),
    path("stats/", apis.SeedWebhookStatsApi.as_view(), name="stats-all"),
    path("stats/<int:endpoint_id>", apis.SeedWebhookStatsOneApi.as_view(), name="stats"),
    path("test/<int:endpoint_id>", apis.SeedWebhookTestApi.as_view(), name="test"),
]
