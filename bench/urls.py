"""The product's routes plus the ceiling views; served only under bench.settings."""

from django.urls import path

from bench import ceiling
from crm_platform.urls import urlpatterns as product_urlpatterns

urlpatterns = [
    *product_urlpatterns,
    path("bench/ceiling/django", ceiling.plain_django, name="bench-ceiling-django"),
    path("bench/ceiling/drf", ceiling.PlainDrfApi.as_view(), name="bench-ceiling-drf"),
    path("bench/ceiling/insert", ceiling.OneInsertApi.as_view(), name="bench-ceiling-insert"),
    path("bench/ceiling/bulk-upsert", ceiling.BulkUpsertCeilingApi.as_view(), name="bench-ceiling-bulk-upsert"),
    path("bench/ceiling/events-unnest", ceiling.EventsUnnestCeilingApi.as_view(), name="bench-ceiling-events-unnest"),
    path("bench/ceiling/event-writes", ceiling.EventWritesCeilingApi.as_view(), name="bench-ceiling-event-writes"),
    path("bench/ceiling/inbox-writes", ceiling.InboxWriteCeilingApi.as_view(), name="bench-ceiling-inbox-writes"),
]
