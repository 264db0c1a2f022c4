"""Celery tasks of the costs app: thin wrappers around its services. Scheduled in config/beat.py."""

from celery import shared_task


@shared_task(acks_late=True, soft_time_limit=240, time_limit=300)
def refresh_rollups() -> dict:
    """Roll the ledger up into daily buckets to now minus the rollup lag (ADR 0006). Safe to re-run
    after a crash (``acks_late``) and to overlap a still-running refresh: each organization is rolled
    in its own transaction under a ``SKIP LOCKED`` row lock, so an overlapping run skips it."""
    from costs.services.rollups import rollups_refresh

    report = rollups_refresh()
    return {
        "until": report.until.isoformat(),
        "organizations": len(report.organizations),
        "days": report.days,
        "buckets": report.buckets,
        "skipped": report.skipped,
    }
