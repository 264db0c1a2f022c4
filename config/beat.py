"""The celery-beat schedule, defined once in code (django-celery-beat's database scheduler mirrors
it into the admin, where operators can see and pause jobs). Every job is safe to run twice, late or
concurrently."""

from celery.schedules import crontab

BEAT_SCHEDULE = {
    # Return money held by checks whose usage never arrived (TTL: SPENDGUARD_RESERVATION_TTL_SECONDS).
    "budgets-expire-reservations": {
        "task": "budgets.tasks.expire_reservations",
        "schedule": crontab(),
    },
    # Start each active budget's new period (a new day, week, sprint ...) up to two minutes before it
    # begins, so budget lists and reports read live rows instead of summing the ledger.
    "budgets-start-current-periods": {
        "task": "budgets.tasks.start_current_periods",
        "schedule": crontab(),
    },
    # Prove live budget spend equals the ledger; log and repair any drift.
    "budgets-reconcile-spend": {
        "task": "budgets.tasks.reconcile_budget_spend",
        "schedule": crontab(minute="*/15"),
    },
    # Alert deliveries whose first attempt never ran or failed: retried with exponential backoff.
    "budgets-retry-alert-deliveries": {
        "task": "budgets.tasks.retry_alert_deliveries",
        "schedule": crontab(),
    },
    # Project every budget to the end of its own period; alert once per period when it will exceed.
    "budgets-forecast-spend": {
        "task": "budgets.tasks.forecast_budget_spend",
        "schedule": crontab(minute="7"),
    },
    # Spend spikes of agents and projects against their own baseline (current hour and day windows).
    "budgets-detect-anomalies": {
        "task": "budgets.tasks.detect_spend_anomalies",
        "schedule": crontab(minute="*/5"),
    },
    # Daily rollups of the ledger up to now - SPENDGUARD_ROLLUP_LAG_SECONDS (ADR 0006); reports add the
    # tail since, so the cadence bounds how much tail they read, never their accuracy.
    # Offset by a minute from the anomaly job so the two do not start together on a small worker.
    "costs-refresh-rollups": {
        "task": "costs.tasks.refresh_rollups",
        "schedule": crontab(minute="1-59/5"),
    },
    # Savings recommendations from the last SPENDGUARD_RECOMMENDATION_WINDOW_DAYS of the ledger
    # (refreshes open ones, expires the ones no longer found). Nightly, after the day's rollups.
    "recommendations-generate": {
        "task": "recommendations.tasks.generate_recommendations",
        "schedule": crontab(minute="23", hour="3"),
    },
    # Realized savings of implemented recommendations, measured from the ledger against their baseline.
    "recommendations-verify-implemented": {
        "task": "recommendations.tasks.verify_implemented_recommendations",
        "schedule": crontab(minute="43", hour="3"),
    },
}
