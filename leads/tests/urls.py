"""The product's URLconf plus seed 003's CRM aliases mounted where crm_platform.urls will
mount them (path("api/integrations/crm/", include("leads.urls_integrations")))."""

from django.urls import include, path

from crm_platform.urls import urlpatterns as product_urlpatterns

urlpatterns = [
    *product_urlpatterns,
    path("api/integrations/crm/", include("leads.urls_integrations")),
]
