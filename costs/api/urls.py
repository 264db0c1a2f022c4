from django.urls import include, path

from costs.api.views import UsageApi, UsageDetailApi

urlpatterns = [
    path("usage/", UsageApi.as_view(), name="usage"),
    path("usage/<int:pk>/", UsageDetailApi.as_view(), name="usage-detail"),
    path("", include("costs.api.report_urls")),
]
