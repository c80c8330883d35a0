"""Seed 003's CRM routes, served exactly as written, as aliases of the /api/v1/ resources.

crm_platform.urls mounts them under /api/integrations/crm/:

    GET /api/integrations/crm/leads/<email>             the lead by email
    GET /api/integrations/crm/leads/<email>/activities  its contact's timeline
    PUT /api/integrations/crm/leads/<email>/status      {"status": ...}
    GET /api/integrations/crm/leads                     search: ?q=, status, source
    GET /api/integrations/crm/pipeline/stats            leads per status, default pipeline stats
"""

from django.urls import path

from leads import apis

app_name = "crm_integrations"

urlpatterns = [
    path("leads", apis.CrmLeadSearchApi.as_view(), name="lead-search"),
    path("leads/<str:email>", apis.CrmLeadByEmailApi.as_view(), name="lead-by-email"),
    path("leads/<str:email>/activities", apis.CrmLeadActivitiesApi.as_view(), name="lead-activities"),
    path("leads/<str:email>/status", apis.CrmLeadStatusApi.as_view(), name="lead-status"),
    path("pipeline/stats", apis.CrmPipelineStatsApi.as_view(), name="pipeline-stats"),
]
