"""/api/v1/budgets/ — budgets with live status (API keys read; staff users write)."""

from django.urls import path

from budgets.api.budgets import BudgetDetailApi, BudgetListApi

urlpatterns = [
    path("budgets/", BudgetListApi.as_view(), name="budgets"),
    path("budgets/<int:pk>/", BudgetDetailApi.as_view(), name="budget-detail"),
]
