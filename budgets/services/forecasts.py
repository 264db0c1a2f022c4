"""Forecast alerts: project each budget's spend to the end of its own period and warn, once per
period, when the projection reaches the limit before the limit is actually reached (issue 5).

The rule (:func:`spend_projection`):

- **Burn rate** = spend over the last ``RECENT_WINDOW`` (7 days), or over the period so far when the
  period is younger than that, divided by that window's length. Only the current period counts: a
  new sprint or month is usually new work, and a budget's spend before its period began may have
  been under other limits. Seven days smooths the weekday / weekend rhythm while still following a
  change of pace within a week.
- **Projection** = settled spend so far + burn rate x time left until the period ends (the
  budget's own end: the sprint's last day, the custom range's end, the month end, ...).
- **Too early to tell**: no projection until the period is at least ``MIN_ELAPSED_FRACTION`` (1/20)
  of its length old, and at least ``MIN_ELAPSED`` (an hour), capped at ``RECENT_WINDOW`` (so a
  yearly budget forecasts after 7 days, not 18): an hour into a month, one burst of work would
  project wildly. Threshold alerts still cover actual spend meanwhile.
- The alert fires when the exact projection (rational arithmetic, no floats) reaches the limit
  while settled spend is still below it (beyond that, the 100 % threshold alert has said it).

Money is integer nano-dollars throughout; the burn rate is an exact ``Fraction`` of nano-dollars
per second, and figures are rounded half-up to the nano-dollar only when reported.
"""

import logging
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from budgets.models import AlertKind, AlertSeverity, Budget, BudgetPeriod, PeriodKind, nanos_usd_display
from budgets.services.alerts import alert_record, budget_node_label
from budgets.services.periods import (
    Bounds,
    active_budgets,
    ledger_coverage,
    ledger_nanos_sum,
    period_bounds,
    period_ensure,
)
from costs.models import Sprint, UsageRecord

logger = logging.getLogger(__name__)

# The burn rate is the spend of (at most) this trailing window.
RECENT_WINDOW = timedelta(days=7)
# No forecast before the period is this fraction of its length old, and at least MIN_ELAPSED.
MIN_ELAPSED_FRACTION = Fraction(1, 20)
MIN_ELAPSED = timedelta(hours=1)
# Budgets whose ledger sums share one (conditional-aggregate) query.
BUDGETS_PER_LEDGER_QUERY = 100

_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Projection:
    """Where a budget period is heading at its recent burn rate.

    ``burn_nanos_per_second``: nano-USD per second (exact). ``projected_nanos``: spend at the
    period's end, nano-USD (half-up). ``exhaustion_at``: when spend reaches the limit at this rate,
    if that is before the period ends and the limit was not already reached; otherwise None.
    """

    burn_nanos_per_second: Fraction
    projected_nanos: int
    exhaustion_at: datetime | None


def fraction_round_half_up(value: Fraction) -> int:
    """The nearest integer, ties away from zero (``usd_to_nanos``' ``ROUND_HALF_UP``), exactly."""
    magnitude = (2 * abs(value.numerator) + value.denominator) // (2 * value.denominator)
    return magnitude if value >= 0 else -magnitude


def minimum_elapsed(*, period_start: datetime, period_end: datetime, recent_window: timedelta) -> timedelta:
    """How old a period must be before it is forecast (see the module docstring)."""
    share = (period_end - period_start) * MIN_ELAPSED_FRACTION.numerator / MIN_ELAPSED_FRACTION.denominator
    return min(max(share, MIN_ELAPSED), recent_window)


def burn_window_start(*, period_start: datetime, now: datetime, recent_window: timedelta) -> datetime:
    """Where the burn rate's window starts: ``recent_window`` before ``now``, or the period's start
    when the period is younger. Spend in ``[burn_window_start, now)`` is the "recent spend"."""
    return max(period_start, now - recent_window)


def spend_projection(
    *,
    spent_nanos: int,
    limit_nanos: int,
    period_start: datetime,
    period_end: datetime,
    now: datetime,
    recent_spend_nanos: int,
    recent_window: timedelta = RECENT_WINDOW,
) -> Projection | None:
    """Project a period's spend to ``period_end`` (pure; no database).

    ``spent_nanos``: settled spend of the period so far; ``recent_spend_nanos``: the spend in
    ``[burn_window_start(...), now)`` (the caller measures it with the same window). Returns None
    when there is nothing to forecast: ``now`` outside the period, or the period younger than
    :func:`minimum_elapsed`. Negative recent spend (corrections) projects below ``spent_nanos``.
    """
    if not period_start < now < period_end:
        return None
    if now - period_start < minimum_elapsed(
        period_start=period_start, period_end=period_end, recent_window=recent_window
    ):
        return None
    observed_us = (now - burn_window_start(period_start=period_start, now=now, recent_window=recent_window)) // (
        _MICROSECOND
    )
    remaining_us = (period_end - now) // _MICROSECOND
    per_microsecond = Fraction(recent_spend_nanos, observed_us)
    projected = spent_nanos + per_microsecond * remaining_us
    exhaustion_at = None
    if spent_nanos < limit_nanos and recent_spend_nanos > 0:
        # Whole microseconds until the limit is reached, rounded up: the first instant it is.
        needed_us = -(-(limit_nanos - spent_nanos) * observed_us // recent_spend_nanos)
        if needed_us <= remaining_us:  # the same test as projected >= limit, exactly
            exhaustion_at = now + needed_us * _MICROSECOND
    return Projection(
        burn_nanos_per_second=per_microsecond * 1_000_000,
        projected_nanos=fraction_round_half_up(projected),
        exhaustion_at=exhaustion_at,
    )


# --- the periodic job -------------------------------------------------------------------------


@dataclass(slots=True)
class _Candidate:
    budget: Budget
    bounds: Bounds
    window_start: datetime
    period: BudgetPeriod | None = None


def budget_forecasts_run(*, now: datetime | None = None, organization_id: int | None = None) -> int:
    """Forecast every active budget with a bounded current period (``total`` budgets have no end to
    forecast to) and record a ``forecast`` alert, once per budget period and limit, for each whose
    projection reaches its limit. Returns how many alerts this run recorded.

    Safe to run twice, late or concurrently: the alert's once-only key (budget, period start,
    limit) makes a second recording a no-op, and a late run forecasts the period current at
    ``now``. Spend so far is the live period row's ``spent_nanos`` (its ``limit_nanos`` too); a
    budget without a row for its current period (no usage booked in it yet) is read from the
    ledger, and its row is created (``period_ensure``) only when an alert is recorded, because the
    alert belongs to that period.

    Queries per organization: one for its budgets, one for the sprints of sprint-period budgets
    (when any), one for the period rows, one ledger aggregate per ``BUDGETS_PER_LEDGER_QUERY``
    budgets; then a few per recorded alert.
    """
    now = now or timezone.now()
    organizations = Budget.objects.filter(is_active=True)
    if organization_id is not None:
        organizations = organizations.filter(organization_id=organization_id)
    recorded = 0
    for org_id in sorted(set(organizations.values_list("organization_id", flat=True))):
        recorded += _forecast_organization(org_id, now)
    if recorded:
        logger.info("Recorded %d forecast alert(s).", recorded)
    return recorded


def _forecast_organization(organization_id: int, now: datetime) -> int:
    candidates = _candidates(organization_id, now)
    if not candidates:
        return 0
    rows = BudgetPeriod.objects.filter(
        budget_id__in=[c.budget.id for c in candidates], starts_at__in={c.bounds.starts_at for c in candidates}
    )
    by_key = {(row.budget_id, row.starts_at): row for row in rows}
    for candidate in candidates:
        candidate.period = by_key.get((candidate.budget.id, candidate.bounds.starts_at))
    recent, ledger_spent = _ledger_sums(organization_id, candidates, now)

    recorded = 0
    for candidate in candidates:
        budget, bounds, period = candidate.budget, candidate.bounds, candidate.period
        spent = period.spent_nanos if period is not None else ledger_spent[budget.id]
        limit = period.limit_nanos if period is not None else budget.limit_nanos
        projection = spend_projection(
            spent_nanos=spent,
            limit_nanos=limit,
            period_start=bounds.starts_at,
            period_end=bounds.ends_at,
            now=now,
            recent_spend_nanos=recent[budget.id],
        )
        if projection is None or projection.exhaustion_at is None:
            continue
        if _forecast_alert_record(budget, bounds, period, spent, limit, projection, now):
            recorded += 1
    return recorded


def _candidates(organization_id: int, now: datetime) -> list[_Candidate]:
    """The organization's budgets whose current period is bounded and old enough to forecast."""
    budgets = [b for b in active_budgets(organization_id=organization_id) if b.period != PeriodKind.TOTAL]
    sprint_projects = {
        b.project_id or b.agent.project_id for b in budgets if b.period == PeriodKind.SPRINT and not b.sprint_id
    }
    sprints = list(Sprint.objects.filter(project_id__in=sprint_projects)) if sprint_projects else []
    candidates = []
    for budget in budgets:
        bounds = period_bounds(budget, now, sprints=sprints)
        if bounds is None or bounds.ends_at is None:
            continue
        if now - bounds.starts_at < minimum_elapsed(
            period_start=bounds.starts_at, period_end=bounds.ends_at, recent_window=RECENT_WINDOW
        ):
            continue  # too young: spend_projection would say so too, skip the ledger work
        window_start = burn_window_start(period_start=bounds.starts_at, now=now, recent_window=RECENT_WINDOW)
        candidates.append(_Candidate(budget, bounds, window_start))
    return candidates


def _ledger_sums(
    organization_id: int, candidates: list[_Candidate], now: datetime
) -> tuple[dict[int, int], dict[int, int]]:
    """``({budget id: recent spend}, {budget id: period spend})`` in nano-USD from the ledger, with
    each budget's coverage, as conditional sums (one query per chunk of budgets). The period spend
    is read only for budgets without a live period row."""
    recent: dict[int, int] = {}
    spent: dict[int, int] = {}
    for offset in range(0, len(candidates), BUDGETS_PER_LEDGER_QUERY):
        chunk = candidates[offset : offset + BUDGETS_PER_LEDGER_QUERY]
        sums = {}
        for c in chunk:
            coverage = ledger_coverage(c.budget)
            sums[f"recent_{c.budget.id}"] = ledger_nanos_sum(
                where=coverage & Q(occurred_at__gte=c.window_start, occurred_at__lt=now)
            )
            if c.period is None:
                sums[f"spent_{c.budget.id}"] = ledger_nanos_sum(
                    where=coverage & Q(occurred_at__gte=c.bounds.starts_at, occurred_at__lt=c.bounds.ends_at)
                )
        since = min(c.bounds.starts_at if c.period is None else c.window_start for c in chunk)
        totals = UsageRecord.objects.filter(
            organization_id=organization_id, occurred_at__gte=since, cost_usd__isnull=False
        ).aggregate(**sums)
        for c in chunk:
            recent[c.budget.id] = int(totals[f"recent_{c.budget.id}"] or 0)
            if c.period is None:
                spent[c.budget.id] = int(totals[f"spent_{c.budget.id}"] or 0)
    return recent, spent


@transaction.atomic
def _forecast_alert_record(
    budget: Budget,
    bounds: Bounds,
    period: BudgetPeriod | None,
    spent: int,
    limit: int,
    projection: Projection,
    now: datetime,
) -> bool:
    if period is None:
        # The alert names its period (and its once-only key is the period's start); this is the row
        # the period's first check or usage would create, initialised from the same ledger.
        period, _ = period_ensure(budget, bounds)
    local_zone = budget.organization.timezone if budget.period == PeriodKind.SPRINT else budget.timezone
    exhaustion_day = projection.exhaustion_at.astimezone(zoneinfo.ZoneInfo(local_zone)).date()
    period_label = budget.period_word
    message = (
        f"{budget_node_label(budget)} is forecast to exceed its {period_label} budget {budget.name!r}"
        f" on {exhaustion_day.isoformat()}: {nanos_usd_display(projection.projected_nanos)} projected"
        f" against {nanos_usd_display(limit)}."
    )
    alert = alert_record(
        organization_id=budget.organization_id,
        kind=AlertKind.FORECAST,
        severity=AlertSeverity.WARNING,
        message=message[:300],
        spend_nanos=spent,
        fired_at=now,
        budget=budget,
        period=period,
        threshold_percent=100,
        limit_nanos=limit,
        projected_nanos=projection.projected_nanos,
        projected_exhaustion_at=projection.exhaustion_at,
    )
    return alert is not None
