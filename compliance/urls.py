"""Routes of the compliance app, mounted under /api/v1/ by crm_platform.urls."""

from django.urls import path

from compliance import audit_apis, privacy_apis

urlpatterns: list = [
    path("audit", audit_apis.AuditEventListApi.as_view(), name="audit-list"),
    path("contacts/<int:pk>/consents", privacy_apis.ConsentsApi.as_view(), name="contact-consents"),
    path("contacts/<int:pk>/restriction", privacy_apis.RestrictionApi.as_view(), name="contact-restriction"),
    path("contacts/<int:pk>/export", privacy_apis.ContactExportApi.as_view(), name="contact-export"),
    path("contacts/<int:pk>/erase", privacy_apis.ContactEraseApi.as_view(), name="contact-erase"),
    path("exports/<uuid:bundle_id>", privacy_apis.ExportStatusApi.as_view(), name="export-detail"),
    path("exports/download/<str:token>", privacy_apis.ExportDownloadApi.as_view(), name="export-download"),
]
