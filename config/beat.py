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
    # Prove live budget spend equals the ledger; log and repair any drift.
    "budgets-reconcile-spend": {
        "task": "budgets.tasks.reconcile_budget_spend",
        "schedule": crontab(minute="*/15"),
    },
}
