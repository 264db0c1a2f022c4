"""System checks for the budgets app's settings (run by ``manage.py check`` and at start-up)."""

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.db import connections
from redis import RedisError

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


@register(deploy=True)
def redis_store_durability_check(app_configs, **kwargs) -> list[Warning]:
    """``manage.py check --deploy``: the Redis store holds reservations nowhere else, so Redis must not
    evict keys, and should persist them (ADR 0008, "Losing Redis")."""
    if settings.SPENDGUARD_BUDGET_STORE != "redis":
        return []
    from budgets.services import redis_store

    try:
        config = redis_store.client().config_get("maxmemory-policy") | redis_store.client().config_get("appendonly")
    except RedisError as exc:  # unreachable, or CONFIG disabled (managed Redis): cannot tell
        return [Warning(f"Could not read the Redis store's configuration ({exc}).", id="budgets.W001")]
    problems = []
    if config.get("maxmemory-policy", "noeviction") != "noeviction":
        problems.append(
            Warning(
                f"The Redis budget store evicts keys (maxmemory-policy {config['maxmemory-policy']}): an evicted "
                "reservation stops counting against its budgets.",
                hint="Run the store's Redis with maxmemory-policy noeviction.",
                id="budgets.W002",
            )
        )
    if config.get("appendonly") != "yes":
        problems.append(
            Warning(
                "The Redis budget store does not use the append-only file: after a restart, reservations held "
                "at that moment are forgotten (spent amounts are rebuilt from PostgreSQL).",
                hint="Run the store's Redis with appendonly yes (appendfsync everysec).",
                id="budgets.W003",
            )
        )
    return problems
