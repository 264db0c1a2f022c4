from django.urls import path

from budgets.api.reports import AnomaliesApi, BudgetProjectionsApi

urlpatterns = [
    path("reports/budgets/", BudgetProjectionsApi.as_view(), name="report-budgets"),
    path("reports/anomalies/", AnomaliesApi.as_view(), name="report-anomalies"),
]
