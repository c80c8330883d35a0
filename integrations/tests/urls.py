"""The product's routes plus seed 003's webhook routes, as crm_platform.urls will mount them."""

from django.urls import include, path

from crm_platform.urls import urlpatterns as product

urlpatterns = [*product, path("api/integrations/webhooks/", include("integrations.urls_seed003"))]
