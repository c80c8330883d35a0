"""Routes of the leads app, mounted under /api/v1/ by crm_platform.urls."""

from django.urls import path

from leads import apis

urlpatterns = [
    path("leads", apis.LeadListApi.as_view(), name="lead-list"),
    path("leads/<int:pk>", apis.LeadDetailApi.as_view(), name="lead-detail"),
    path("deals", apis.DealListApi.as_view(), name="deal-list"),
    path("deals/<int:pk>", apis.DealDetailApi.as_view(), name="deal-detail"),
    path("deals/<int:pk>/move", apis.DealMoveApi.as_view(), name="deal-move"),
    path("pipelines", apis.PipelineListApi.as_view(), name="pipeline-list"),
    path("pipelines/<int:pk>/stats", apis.PipelineStatsApi.as_view(), name="pipeline-stats"),
    path("funnels/<str:name>", apis.FunnelApi.as_view(), name="funnel"),
]
