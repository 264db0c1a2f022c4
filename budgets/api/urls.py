from django.urls import include, path

urlpatterns = [
    path("", include("budgets.api.check_urls")),
    path("", include("budgets.api.budget_urls")),
    path("", include("budgets.api.alert_urls")),
]
