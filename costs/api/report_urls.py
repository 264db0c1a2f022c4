from django.urls import path

from costs.api.reports import BreakdownApi, CurrentApi, TopApi, TotalsApi, TrendApi, UnpricedApi

# Budget reports (projections, anomalies) are budgets.api.report_urls, wired in config.urls: costs
# does not import budgets.
urlpatterns = [
    path("reports/breakdown/", BreakdownApi.as_view(), name="report-breakdown"),
    path("reports/totals/", TotalsApi.as_view(), name="report-totals"),
    path("reports/trend/", TrendApi.as_view(), name="report-trend"),
    path("reports/current/", CurrentApi.as_view(), name="report-current"),
    path("reports/top/", TopApi.as_view(), name="report-top"),
    path("reports/unpriced/", UnpricedApi.as_view(), name="report-unpriced"),
]
