"""Celery tasks of the budgets app: thin wrappers around the maintenance services.

Both jobs are idempotent and safe to overlap (see budgets.services.maintenance), so ``acks_late``
re-running one after a worker crash is harmless. Scheduled in config/beat.py.
"""

from celery import shared_task


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def expire_reservations() -> int:
    """Release reservations held past their TTL; returns how many were released."""
    from budgets.services.maintenance import reservations_expire

    return reservations_expire()


@shared_task(acks_late=True, soft_time_limit=600, time_limit=660)
def reconcile_budget_spend() -> dict:
    """Recompute live budget counters from the ledger, log and repair drift."""
    from budgets.services.maintenance import budget_spend_reconcile

    report = budget_spend_reconcile()
    return {"checked": report.checked, "drifted": [drift.period_id for drift in report.drifts]}
