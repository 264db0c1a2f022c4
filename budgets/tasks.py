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


@shared_task(acks_late=True, soft_time_limit=240, time_limit=300)
def start_current_periods() -> int:
    """Start the live period of every active budget whose current period has none yet."""
    from budgets.services.maintenance import current_periods_start

    return current_periods_start()


@shared_task(acks_late=True, soft_time_limit=600, time_limit=660)
def reconcile_budget_spend() -> dict:
    """Recompute live budget counters from the ledger, log and repair drift."""
    from budgets.services.maintenance import budget_spend_reconcile

    report = budget_spend_reconcile()
    return {"checked": report.checked, "drifted": [drift.period_id for drift in report.drifts]}


# --- alerts (ADR 0005) --------------------------------------------------------------------------


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def deliver_alert(alert_id: int) -> int:
    """First delivery attempt of one alert's channels, queued after the alert's commit; returns how
    many deliveries were sent. A failure is recorded on the delivery with its next attempt time
    (never raised for a retry here): ``retry_alert_deliveries`` retries it with backoff."""
    from budgets.services.delivery import alert_deliver

    return alert_deliver(alert_id=alert_id)


@shared_task(acks_late=True, soft_time_limit=240, time_limit=300)
def retry_alert_deliveries() -> int:
    """Attempt every delivery that is due (pending whose first attempt never ran, e.g. the broker was
    down, or failed whose backoff has passed); returns how many were sent."""
    from budgets.services.delivery import deliveries_retry_due

    return deliveries_retry_due()


@shared_task(acks_late=True, soft_time_limit=540, time_limit=600)
def forecast_budget_spend() -> int:
    """Project each budget's spend to the end of its own period; record a forecast alert (once per
    period) where the projection crosses the limit. Returns how many alerts were recorded."""
    from budgets.services.forecasts import budget_forecasts_run

    return budget_forecasts_run()


@shared_task(acks_late=True, soft_time_limit=240, time_limit=300)
def detect_spend_anomalies() -> int:
    """Flag agents and projects whose spend in the current hour / day is far above their own baseline
    (once per window). Returns how many alerts were recorded."""
    from budgets.services.anomalies import spend_anomalies_detect

    return spend_anomalies_detect()
