"""/api/v1/alerts/ — budget alerts (API keys read; staff users acknowledge and resolve)."""

from django.urls import path

from budgets.api.alerts import AlertAcknowledgeApi, AlertDetailApi, AlertListApi, AlertResolveApi

urlpatterns = [
    path("alerts/", AlertListApi.as_view(), name="alerts"),
    path("alerts/<int:pk>/", AlertDetailApi.as_view(), name="alert-detail"),
    path("alerts/<int:pk>/acknowledge/", AlertAcknowledgeApi.as_view(), name="alert-acknowledge"),
    path("alerts/<int:pk>/resolve/", AlertResolveApi.as_view(), name="alert-resolve"),
]
