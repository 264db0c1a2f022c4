"""System checks for the budgets app's settings (run by ``manage.py check`` and at start-up)."""

from django.conf import settings
from django.core.checks import Error, register
from django.db import connections

STORES = ("postgresql", "redis")


@register()
def budget_store_check(app_configs, **kwargs) -> list[Error]:
    store = settings.SPENDGUARD_BUDGET_STORE
    if store not in STORES:
        return [
            Error(
                f"SPENDGUARD_BUDGET_STORE is {store!r}; expected one of {', '.join(STORES)}.",
                id="budgets.E001",
            )
        ]
    if store == "redis" and connections["default"].vendor != "postgresql":
        # The store copies spend by version and confirms cached contexts by the check context
        # version, both kept by PostgreSQL triggers (migrations 0003 and 0005).
        return [
            Error(
                "SPENDGUARD_BUDGET_STORE=redis needs PostgreSQL as the database.",
                hint="Set DATABASE_URL to PostgreSQL, or use SPENDGUARD_BUDGET_STORE=postgresql.",
                id="budgets.E002",
            )
        ]
    failure = settings.SPENDGUARD_BUDGET_STORE_FAILURE
    if failure not in ("closed", "open"):
        return [
            Error(
                f"SPENDGUARD_BUDGET_STORE_FAILURE is {failure!r}; expected closed or open.",
                id="budgets.E003",
            )
        ]
    return []
