"""Reads of budgets for operators: the live status of each budget in its current period.

One call answers for any number of budgets with a fixed number of queries: the budgets (the caller's
queryset), the sprints their sprint periods need (only if any), their current :class:`BudgetPeriod`
rows (one query), and — only for budgets whose current period has no live row yet — one aggregate
over the ledger that sums every such budget at once.

A budget with no live row for its current period (a period that began moments ago, before any job,
check or settlement started it) shows what the ledger says it spent
(``ledger_spend_nanos`` semantics, read-only, nothing reserved). Reads never create period rows:
creating or re-shaping a budget, the every-minute ``start_current_periods`` job (new days, weeks,
sprints ...) or the first check or settlement does (``period_ensure``), from the same ledger sum —
so the ledger fallback is rare.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Q, QuerySet
from django.utils import timezone
from redis import RedisError

from budgets.models import AlertKind, Budget, BudgetAlert, BudgetPeriod, PeriodKind, nanos_to_usd, usd_to_nanos
from budgets.services import redis_store
from budgets.services.forecasts import fraction_round_half_up, spend_projection
from budgets.services.periods import Bounds, ledger_coverage, ledger_nanos_sum, period_bounds
from costs.analytics import local_midnight, spend_daily_series
from costs.models import Agent, Organization, Project, Sprint, UsageRecord
from costs.services.scope import KeyScope

logger = logging.getLogger(__name__)


class LiveStatus:
    """``status`` of a budget (public API values)."""

    OK = "ok"
    WARNING = "warning"  # spent + reserved reached the highest alert threshold below 100 %
    EXCEEDED = "exceeded"  # spent + reserved reached the limit
    INACTIVE = "inactive"  # switched off, or no current period (custom range over, no sprint running)

    values = (OK, WARNING, EXCEEDED, INACTIVE)


def status_of(*, limit_nanos: int, used_nanos: int, thresholds: Iterable[int]) -> str:
    """``ok`` / ``warning`` / ``exceeded`` for ``used_nanos`` (spent + reserved) against a limit.

    ``exceeded`` from 100 % of the limit (grace is an allowance of hard enforcement, not of the
    status); ``warning`` from the highest alert threshold below 100 % (90 % by default). A budget
    whose thresholds are all >= 100 % goes straight from ok to exceeded.
    """
    if used_nanos >= limit_nanos:
        return LiveStatus.EXCEEDED
    below = [t for t in thresholds if isinstance(t, int) and t < 100]
    if below and used_nanos * 100 >= limit_nanos * max(below):
        return LiveStatus.WARNING
    return LiveStatus.OK


@dataclass(frozen=True, slots=True)
class BudgetLive:
    """A budget with its current period's figures (nano-dollars; ``*_usd`` for display)."""

    budget: Budget
    period_start: datetime | None
    period_end: datetime | None
    limit_nanos: int
    spent_nanos: int
    reserved_nanos: int
    status: str
    # False when the figures come from the ledger because no live period row exists yet.
    has_period_row: bool

    @property
    def remaining_nanos(self) -> int:
        """What is left before the limit; 0 (not negative) once spent + reserved passed it."""
        return max(0, self.limit_nanos - self.spent_nanos - self.reserved_nanos)

    @property
    def limit_usd(self) -> Decimal:
        return nanos_to_usd(self.limit_nanos)

    @property
    def spent_usd(self) -> Decimal:
        return nanos_to_usd(self.spent_nanos)

    @property
    def reserved_usd(self) -> Decimal:
        return nanos_to_usd(self.reserved_nanos)

    @property
    def remaining_usd(self) -> Decimal:
        return nanos_to_usd(self.remaining_nanos)


def budgets_visible(*, scope: KeyScope) -> QuerySet[Budget]:
    """The budgets an API key may read: those that cover what it may spend on. An organization key
    sees all of its organization's; a project key the organization's own budgets plus those on its
    project and that project's sprints and agents; an agent key the organization's, its project's,
    that project's sprints' and its own."""
    budgets = budget_queryset().filter(organization=scope.organization)
    if scope.project is None:
        return budgets
    org_level = Q(project__isnull=True, sprint__isnull=True, agent__isnull=True)
    project_level = Q(project=scope.project) | Q(sprint__project=scope.project)
    if scope.agent is None:
        return budgets.filter(org_level | project_level | Q(agent__project=scope.project))
    return budgets.filter(org_level | project_level | Q(agent=scope.agent))


def budget_queryset() -> QuerySet[Budget]:
    """Budgets with what their display and period computation need (no per-row queries)."""
    return Budget.objects.select_related("organization", "project", "sprint__project", "agent__project")


def budgets_live(*, budgets: Iterable[Budget], now: datetime | None = None) -> list[BudgetLive]:
    """The live status of ``budgets`` (in their order) at ``now`` (default: the current time).

    Load ``budgets`` with :func:`budget_queryset` (organization, sprint and agent are read).
    """
    now = now or timezone.now()
    budgets = list(budgets)
    bounds = _current_bounds(budgets, now)
    periods = _periods_by_budget(bounds)
    missing = {b.pk: bounds[b.pk] for b in budgets if bounds.get(b.pk) is not None and b.pk not in periods}
    ledger = _ledger_spend(budgets, missing)

    result = []
    for budget in budgets:
        current = bounds.get(budget.pk)
        period = periods.get(budget.pk)
        limit = budget.limit_nanos
        if period is not None:
            # The row's limit is what enforcement uses; budget_update keeps it equal to the budget's.
            limit, spent, reserved = period.limit_nanos, period.spent_nanos, period.reserved_nanos
        else:
            spent, reserved = ledger.get(budget.pk, 0), 0
        if not budget.is_active or current is None:
            status = LiveStatus.INACTIVE
        else:
            status = status_of(limit_nanos=limit, used_nanos=spent + reserved, thresholds=budget.thresholds)
        result.append(
            BudgetLive(
                budget=budget,
                period_start=current.starts_at if current else None,
                period_end=current.ends_at if current else None,
                limit_nanos=limit,
                spent_nanos=spent if current else 0,
                reserved_nanos=reserved if current else 0,
                status=status,
                has_period_row=period is not None,
            )
        )
    return result


def budgets_live_filtered(
    *, budgets: QuerySet[Budget], status: str | None, now: datetime | None = None
) -> list[BudgetLive]:
    """:func:`budgets_live` of every budget in ``budgets``, keeping only those with ``status``
    (the status is computed, so this filter cannot run in SQL)."""
    live = budgets_live(budgets=budgets, now=now)
    return [item for item in live if status is None or item.status == status]


def budget_ids_with_status(*, budgets: QuerySet[Budget], status: str, now: datetime | None = None) -> list[int]:
    """Ids of the budgets in ``budgets`` whose live status is ``status`` (for list filters)."""
    return [item.budget.pk for item in budgets_live_filtered(budgets=budgets, status=status, now=now)]


def _current_bounds(budgets: list[Budget], now: datetime) -> dict[int, Bounds | None]:
    # Project and agent budgets with sprint periods need the project's sprints: one query for all.
    project_ids = {
        b.project_id or b.agent.project_id
        for b in budgets
        if b.period == PeriodKind.SPRINT and not b.sprint_id and (b.project_id or b.agent_id)
    }
    sprints = list(Sprint.objects.filter(project_id__in=project_ids)) if project_ids else []
    return {b.pk: period_bounds(b, now, sprints=sprints) for b in budgets}


def _periods_by_budget(bounds: dict[int, Bounds | None]) -> dict[int, BudgetPeriod]:
    wanted = [(budget_id, b.starts_at) for budget_id, b in bounds.items() if b is not None]
    if not wanted:
        return {}
    condition = Q()
    for budget_id, starts_at in wanted:
        condition |= Q(budget_id=budget_id, starts_at=starts_at)
    periods = list(BudgetPeriod.objects.filter(condition))
    live_reserved_apply(periods)
    return {p.budget_id: p for p in periods}


def live_reserved_apply(periods: list[BudgetPeriod]) -> None:
    """With the Redis store (ADR 0008) money is reserved in Redis, not in the period rows: add what
    it holds to each row's ``reserved_nanos`` (in place; one round trip). Redis unreachable: the
    rows keep their own figure, and a warning says so."""
    if not periods or not redis_store.enabled():
        return
    try:
        live = redis_store.counters([p.pk for p in periods])
    except RedisError as exc:
        logger.warning("Redis budget store unreachable; showing reserved amounts without it (%s)", exc)
        return
    for period in periods:
        period.reserved_nanos += live[period.pk][1]


def _ledger_spend(budgets: list[Budget], missing: dict[int, Bounds]) -> dict[int, int]:
    """What the ledger says each budget in ``missing`` spent in its bounds: one aggregate query with
    one filtered sum per budget (the same rows and rounding as ``periods.ledger_spend_nanos``)."""
    if not missing:
        return {}
    by_id = {b.pk: b for b in budgets}
    sums = {}
    for budget_id, bounds in missing.items():
        budget = by_id[budget_id]
        condition = Q(organization_id=budget.organization_id, occurred_at__gte=bounds.starts_at)
        if bounds.ends_at is not None:
            condition &= Q(occurred_at__lt=bounds.ends_at)
        sums[f"b{budget_id}"] = ledger_nanos_sum(where=condition & ledger_coverage(budget))
    rows = UsageRecord.objects.filter(
        organization_id__in={by_id[i].organization_id for i in missing},
        occurred_at__gte=min(b.starts_at for b in missing.values()),
        cost_usd__isnull=False,
    )
    totals = rows.aggregate(**sums)
    return {budget_id: int(totals[f"b{budget_id}"] or 0) for budget_id in missing}


# --- alerts -------------------------------------------------------------------------------------


def alert_queryset() -> QuerySet[BudgetAlert]:
    """Alerts with what their JSON form reads (no per-row queries)."""
    return BudgetAlert.objects.select_related(
        "organization", "budget", "project", "agent__project", "acknowledged_by", "resolved_by"
    ).prefetch_related("deliveries")


def alerts_recent(*, organization, where: Q | None = None, limit: int = 10) -> list[BudgetAlert]:
    """An organization's newest alerts (those matching ``where``), as the report pages list them:
    their own columns only — no joins, no deliveries."""
    fields = ("organization_id", "kind", "severity", "message", "fired_at", "status")
    alerts = BudgetAlert.objects.filter(organization=organization)
    if where is not None:
        alerts = alerts.filter(where)
    return list(alerts.only(*fields).order_by("-fired_at", "-id")[:limit])


def alerts_visible(*, scope: KeyScope) -> QuerySet[BudgetAlert]:
    """The alerts an API key may read: those of the budgets it may read (:func:`budgets_visible`),
    and anomaly alerts of the projects / agents inside its scope."""
    alerts = alert_queryset().filter(organization=scope.organization)
    if scope.project is None:
        return alerts
    budget_alerts = Q(budget__in=budgets_visible(scope=scope).values("pk"))
    if scope.agent is None:
        return alerts.filter(budget_alerts | Q(project=scope.project) | Q(agent__project=scope.project))
    return alerts.filter(budget_alerts | Q(agent=scope.agent))


# --- reports: projections with an uncertainty band, recent anomalies (issue 6) -----------------

# The band is projected ± BAND_Z x (spread of the remaining spend): about 95 % if daily spend varied
# like independent draws with the burn window's spread.
BAND_Z = Decimal(2)
_MICROSECONDS_PER_DAY = Decimal(86_400_000_000)
DAY = timedelta(days=1)


class ProjectionStatus:
    """``status`` of a budget projection (public API values)."""

    EXCEEDED = "exceeded"  # settled spend has reached the limit
    FORECAST_OVER = "forecast_over"  # the projection reaches the limit
    AT_RISK = "at_risk"  # the projection stays below the limit, the band's high end does not
    ON_TRACK = "on_track"  # the band's high end stays below the limit (or there is no band)
    NO_FORECAST = "no_forecast"  # inactive, no current or no bounded period, or too young to tell

    values = (EXCEEDED, FORECAST_OVER, AT_RISK, ON_TRACK, NO_FORECAST)


@dataclass(frozen=True, slots=True)
class BudgetProjection:
    """Where a budget's current period is heading (nano-USD; None where there is no forecast).

    ``burn_nanos_per_day``: the burn rate of :func:`budgets.services.forecasts.spend_projection`
    per day; ``low_nanos`` / ``high_nanos``: the uncertainty band around ``projected_nanos`` (None
    with fewer than two complete days in the burn window to measure a spread from)."""

    live: BudgetLive
    burn_nanos_per_day: int | None
    projected_nanos: int | None
    low_nanos: int | None
    high_nanos: int | None
    exhaustion_at: datetime | None
    status: str


def budget_projections(*, budgets: Iterable[Budget], now: datetime | None = None) -> list[BudgetProjection]:
    """:func:`budgets_live` of ``budgets`` plus, for each bounded, active current period, a
    projection to the period's end with an uncertainty band — from the daily rollups (and their
    tail), one query per organization, never a ledger scan.

    - **Burn window**: the organization-local days from 6 days before today to now (today partial),
      cut at the period's start — so the rate is :func:`~budgets.services.forecasts.spend_projection`
      over whole local days, the forecast alerts' rule on the rollups' grid. A period starting
      mid-day (a budget time zone other than the organization's, a custom range) counts its first
      day's spend before its start too: rollups are per day.
    - **Projection**: ``spend_projection(spent so far (the live figure), burn window spend, ...)``.
    - **Band**: remaining spend is treated as a random walk: over ``n`` remaining days its spread is
      ``sd x sqrt(n)``, ``sd`` the sample standard deviation of the burn window's *complete* days
      (today excluded). ``low = max(spent, projected - BAND_Z x sd x sqrt(n))``, ``high = projected +
      BAND_Z x sd x sqrt(n)``. Steady spend gives a narrow band, bursty spend a wide one.
    """
    now = now or timezone.now()
    lives = budgets_live(budgets=budgets, now=now)
    wanted = [
        live
        for live in lives
        if live.budget.is_active and live.period_start is not None and live.period_end is not None
    ]
    series: dict[int, dict] = {}
    for organization_id in {live.budget.organization_id for live in wanted}:
        own = [live for live in wanted if live.budget.organization_id == organization_id]
        organization = own[0].budget.organization
        today = now.astimezone(organization.tzinfo).date()
        spend = spend_daily_series(
            organization=organization,
            start=today - timedelta(days=6),
            end=today,
            series={str(live.budget.pk): ledger_coverage(live.budget) for live in own},
        )
        series.update({int(pk): days for pk, days in spend.items()})

    result = []
    for live in lives:
        days = series.get(live.budget.pk)
        if days is None:
            result.append(_no_forecast(live))
            continue
        organization = live.budget.organization
        today = now.astimezone(organization.tzinfo).date()
        window_start = max(live.period_start, local_midnight(today - timedelta(days=6), organization))
        first_day = window_start.astimezone(organization.tzinfo).date()
        recent = sum((usd for day, usd in days.items() if day >= first_day), Decimal(0))
        projection = spend_projection(
            spent_nanos=live.spent_nanos,
            limit_nanos=live.limit_nanos,
            period_start=live.period_start,
            period_end=live.period_end,
            now=now,
            recent_spend_nanos=usd_to_nanos(recent),
            recent_window=now - window_start,
        )
        if projection is None:
            result.append(_no_forecast(live))
            continue
        # Complete days only: today's spend so far would look like a slow day.
        whole_from = first_day if local_midnight(first_day, organization) >= live.period_start else first_day + DAY
        complete = [days.get(whole_from + DAY * i, Decimal(0)) for i in range((today - whole_from).days)]
        low = high = None
        if len(complete) >= 2:
            remaining_days = Decimal((live.period_end - now) // timedelta(microseconds=1)) / _MICROSECONDS_PER_DAY
            half_width = usd_to_nanos(BAND_Z * _sample_sd(complete) * remaining_days.sqrt())
            low = max(live.spent_nanos, projection.projected_nanos - half_width)
            high = projection.projected_nanos + half_width
        result.append(
            BudgetProjection(
                live=live,
                burn_nanos_per_day=fraction_round_half_up(projection.burn_nanos_per_second * 86_400),
                projected_nanos=projection.projected_nanos,
                low_nanos=low,
                high_nanos=high,
                exhaustion_at=projection.exhaustion_at,
                status=_projection_status(live, projection.projected_nanos, high),
            )
        )
    return result


def _no_forecast(live: BudgetLive) -> BudgetProjection:
    status = ProjectionStatus.NO_FORECAST
    if live.status != LiveStatus.INACTIVE and live.spent_nanos >= live.limit_nanos:
        status = ProjectionStatus.EXCEEDED
    return BudgetProjection(live, None, None, None, None, None, status)


def _projection_status(live: BudgetLive, projected: int, high: int | None) -> str:
    if live.spent_nanos >= live.limit_nanos:
        return ProjectionStatus.EXCEEDED
    if projected >= live.limit_nanos:
        return ProjectionStatus.FORECAST_OVER
    if high is not None and high >= live.limit_nanos:
        return ProjectionStatus.AT_RISK
    return ProjectionStatus.ON_TRACK


def _sample_sd(values: list[Decimal]) -> Decimal:
    mean = sum(values, Decimal(0)) / len(values)
    return (sum(((v - mean) ** 2 for v in values), Decimal(0)) / (len(values) - 1)).sqrt()


def anomalies_recent(
    *,
    organization: Organization,
    since: datetime,
    until: datetime,
    scope: KeyScope | None = None,
    project: Project | None = None,
    agent: Agent | None = None,
) -> QuerySet[BudgetAlert]:
    """Anomaly alerts of ``organization`` fired in ``[since, until)``, newest first; with ``scope``
    (an API key's), only those it may read (:func:`alerts_visible`); with ``project`` / ``agent``,
    only that project's (its own and its agents') / that agent's."""
    alerts = alerts_visible(scope=scope) if scope is not None else alert_queryset()
    alerts = alerts.filter(organization=organization, kind=AlertKind.ANOMALY, fired_at__gte=since, fired_at__lt=until)
    if project is not None:
        alerts = alerts.filter(Q(project=project) | Q(agent__project=project))
    if agent is not None:
        alerts = alerts.filter(agent=agent)
    return alerts.order_by("-fired_at", "-id")
