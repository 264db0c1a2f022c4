"""POST /api/v1/budget-checks/ (pre-call check + reservation) and its release."""

from django.urls import path

from budgets.api.checks import BudgetCheckApi, ReservationReleaseApi

urlpatterns = [
    path("budget-checks/", BudgetCheckApi.as_view(), name="budget-check"),
    path("budget-checks/<uuid:reservation_id>/release/", ReservationReleaseApi.as_view(), name="budget-check-release"),
]
