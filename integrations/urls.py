"""Routes of the integrations app, mounted under /api/v1/ by crm_platform.urls."""

urlpatterns: list = []
