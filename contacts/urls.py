"""Routes of the contacts app, mounted under /api/v1/ by crm_platform.urls."""

from django.urls import path

from contacts import apis

urlpatterns = [
    path("contacts", apis.ContactListApi.as_view(), name="contact-list"),
    path("contacts/bulk-upsert", apis.ContactBulkUpsertApi.as_view(), name="contact-bulk-upsert"),
    path("contacts/<int:pk>", apis.ContactDetailApi.as_view(), name="contact-detail"),
    path("contacts/<int:pk>/timeline", apis.ContactTimelineApi.as_view(), name="contact-timeline"),
    path("contacts/<int:pk>/merge", apis.ContactMergeApi.as_view(), name="contact-merge"),
    path("contacts/<int:pk>/lifecycle", apis.ContactLifecycleApi.as_view(), name="contact-lifecycle"),
    path("companies", apis.CompanyListApi.as_view(), name="company-list"),
    path("companies/<int:pk>", apis.CompanyDetailApi.as_view(), name="company-detail"),
    path("notes", apis.NoteListApi.as_view(), name="note-list"),
    path("tickets", apis.TicketListApi.as_view(), name="ticket-list"),
    path("tickets/<int:pk>", apis.TicketDetailApi.as_view(), name="ticket-detail"),
    path("orders", apis.OrderListApi.as_view(), name="order-list"),
    path("subscriptions", apis.SubscriptionListApi.as_view(), name="subscription-list"),
    path("subscriptions/<int:pk>/cancel", apis.SubscriptionCancelApi.as_view(), name="subscription-cancel"),
]
