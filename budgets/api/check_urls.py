"""POST /api/v1/budget-checks/ (pre-call check + reservation) and its release."""

from django.urls import path

from budgets.api.checks import budget_check_view, reservation_release_view

urlpatterns = [
    # Plain Django views for API-key calls, the DRF views (BudgetCheckApi, ReservationReleaseApi)
    # for everything else and for the OpenAPI schema.
    path("budget-checks/", budget_check_view, name="budget-check"),
    path("budget-checks/<uuid:reservation_id>/release/", reservation_release_view, name="budget-check-release"),
]
