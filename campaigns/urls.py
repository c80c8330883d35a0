"""Routes of the campaigns app, mounted under /api/v1/ by crm_platform.urls."""

urlpatterns: list = []
