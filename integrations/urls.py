"""Routes of the integrations app, mounted under /api/v1/ by crm_platform.urls."""

from django.urls import path

from integrations import apis, inbound_apis

urlpatterns = [
    path("events", inbound_apis.EventApi.as_view(), name="event-create"),
    path("events/<int:pk>", inbound_apis.EventDetailApi.as_view(), name="event-detail"),
    path("events/batch", inbound_apis.EventBatchApi.as_view(), name="event-batch"),
    path("webhook-endpoints", apis.WebhookEndpointListApi.as_view(), name="webhook-endpoint-list"),
    path("webhook-endpoints/<int:pk>", apis.WebhookEndpointDetailApi.as_view(), name="webhook-endpoint-detail"),
    path("webhook-endpoints/<int:pk>/test", apis.WebhookEndpointTestApi.as_view(), name="webhook-endpoint-test"),
    path(
        "webhook-endpoints/<int:pk>/rotate-secret",
        apis.WebhookEndpointRotateSecretApi.as_view(),
        name="webhook-endpoint-rotate-secret",
    ),
    path(
        "webhook-endpoints/<int:pk>/deliveries",
        apis.WebhookEndpointDeliveriesApi.as_view(),
        name="webhook-endpoint-deliveries",
    ),
    path("webhook-endpoints/<int:pk>/stats", apis.WebhookEndpointStatsApi.as_view(), name="webhook-endpoint-stats"),
]
