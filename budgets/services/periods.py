"""Which budgets cover a request, the period a moment falls in, and the live period row.

Shared by the pre-call check (:mod:`budgets.services.enforcement`), settlement of ingested usage
and the periodic jobs, so that all of them agree on what "this budget's current period" means.
"""

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import DecimalField, F, Q, Sum, Value
from django.db.models.functions import Round

from budgets.models import NANOS_PER_USD, Budget, BudgetPeriod, PeriodKind
from costs.models import Sprint, UsageRecord

# "total" budgets count everything since this instant (before any usage the ledger can hold).
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Bounds:
    """A budget period: ``[starts_at, ends_at)``; ``ends_at`` None means open-ended."""

    starts_at: datetime
    ends_at: datetime | None

    def contains(self, moment: datetime) -> bool:
        return self.starts_at <= moment and (self.ends_at is None or moment < self.ends_at)


def _local_midnight(day: date, tz: zoneinfo.ZoneInfo) -> datetime:
    # Midnight exists in every zone Python knows except a few historical DST jumps at 00:00; fold=0
    # picks the first occurrence, and astimezone() normalises a non-existent local time forward.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def next_local_midnight(at: datetime, timezone_name: str) -> datetime:
    """The first midnight after ``at`` in ``timezone_name`` (when "today" changes there)."""
    tz = zoneinfo.ZoneInfo(timezone_name)
    return _local_midnight(at.astimezone(tz).date() + timedelta(days=1), tz)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def period_bounds(budget: Budget, at: datetime, *, sprints: list[Sprint] | None = None) -> Bounds | None:
    """The period of ``budget`` that contains ``at``, or None when the budget has none then (a custom
    range that does not contain ``at``, a sprint period with no sprint running).

    Calendar periods are aligned in the budget's time zone; sprint periods use the sprint's dates
    in the organization's time zone (as ingestion does). ``sprints`` (the candidate sprints of the
    budget's project) may be passed to avoid a query per call.
    """
    kind = budget.period
    if kind == PeriodKind.TOTAL:
        return Bounds(EPOCH, None)
    if kind == PeriodKind.CUSTOM:
        bounds = Bounds(budget.custom_start, budget.custom_end)
        return bounds if bounds.contains(at) else None
    if kind == PeriodKind.SPRINT:
        return _sprint_bounds(budget, at, sprints)

    tz = zoneinfo.ZoneInfo(budget.timezone)
    local = at.astimezone(tz).date()
    if kind == PeriodKind.DAILY:
        start, end = local, local + timedelta(days=1)
    elif kind == PeriodKind.WEEKLY:
        start = local - timedelta(days=local.weekday())
        end = start + timedelta(days=7)
    elif kind == PeriodKind.MONTHLY:
        start = local.replace(day=1)
        end = _add_months(start, 1)
    elif kind == PeriodKind.QUARTERLY:
        start = date(local.year, 3 * ((local.month - 1) // 3) + 1, 1)
        end = _add_months(start, 3)
    elif kind == PeriodKind.YEARLY:
        start, end = date(local.year, 1, 1), date(local.year + 1, 1, 1)
    else:  # pragma: no cover - choices are exhaustive
        raise ValueError(f"Unknown period kind {kind!r}")
    return Bounds(_local_midnight(start, tz), _local_midnight(end, tz))


def _sprint_bounds(budget: Budget, at: datetime, sprints: list[Sprint] | None) -> Bounds | None:
    tz = zoneinfo.ZoneInfo(budget.organization.timezone)
    if budget.sprint_id:
        candidates = [budget.sprint]
    else:
        project_id = budget.project_id or budget.agent.project_id
        candidates = (
            [s for s in sprints if s.project_id == project_id]
            if sprints is not None
            else list(Sprint.objects.filter(project_id=project_id))
        )
    local = at.astimezone(tz).date()
    for sprint in candidates:
        if sprint.start_date <= local <= sprint.end_date:
            return Bounds(
                _local_midnight(sprint.start_date, tz), _local_midnight(sprint.end_date + timedelta(days=1), tz)
            )
    return None


def model_matches(model_filter: str, model: str) -> bool:
    """Does usage of ``model`` (as sent, maybe provider-prefixed) count against a budget for
    ``model_filter``? An empty filter matches every model; ``gpt-4o`` matches ``openai/gpt-4o``."""
    return not model_filter or model == model_filter or model.endswith("/" + model_filter)


def covers(budget: Budget, *, project_id: int, sprint_id: int | None, agent_id: int, model: str) -> bool:
    """Does ``budget`` (of the right organization) cover a request with this attribution?"""
    if budget.agent_id is not None:
        node = budget.agent_id == agent_id
    elif budget.sprint_id is not None:
        node = budget.sprint_id == sprint_id
    elif budget.project_id is not None:
        node = budget.project_id == project_id
    else:
        node = True
    return node and model_matches(budget.model_filter, model)


def active_budgets(*, organization_id: int) -> list[Budget]:
    """Every active budget of an organization (with what period computation needs), one query."""
    return list(
        Budget.objects.filter(organization_id=organization_id, is_active=True).select_related(
            "organization", "sprint", "agent"
        )
    )


def ledger_spend_nanos(budget: Budget, bounds: Bounds) -> int:
    """What the ledger says ``budget`` spent in ``bounds``: the sum of each covered row's cost
    rounded half-up to the nano-dollar (the rule settlement uses per row)."""
    rows = UsageRecord.objects.filter(organization_id=budget.organization_id, occurred_at__gte=bounds.starts_at)
    if bounds.ends_at is not None:
        rows = rows.filter(occurred_at__lt=bounds.ends_at)
    total = rows.filter(ledger_coverage(budget), cost_usd__isnull=False).aggregate(total=ledger_nanos_sum())["total"]
    return int(total or 0)


def period_ensure(budget: Budget, bounds: Bounds) -> tuple[BudgetPeriod, bool]:
    """The live row of ``budget`` for ``bounds``, created on first use with its spend taken from the
    ledger. Returns ``(period, created)``.

    Safe under concurrency: two transactions creating the same period race on the unique
    (budget, starts_at) constraint; the loser waits for the winner and reads its row. Callers that
    have already written ledger rows in their own transaction must not add those rows' cost to a
    period this call *created*: the ledger sum it was initialised with includes them.
    """
    existing = BudgetPeriod.objects.filter(budget=budget, starts_at=bounds.starts_at).first()
    if existing is not None:
        return existing, False
    spent = ledger_spend_nanos(budget, bounds)
    try:
        with transaction.atomic():
            period = BudgetPeriod.objects.create(
                budget=budget,
                starts_at=bounds.starts_at,
                ends_at=bounds.ends_at,
                limit_nanos=budget.limit_nanos,
                ceiling_nanos=budget.ceiling_nanos,
                spent_nanos=spent,
            )
    except IntegrityError:
        return BudgetPeriod.objects.get(budget=budget, starts_at=bounds.starts_at), False
    if spent:
        # The spend this period starts with was booked before the budget counted it (a budget added
        # or re-shaped mid-period): its thresholds are crossed now, from zero — each still only once
        # per period, since the alert's key is the period's start, not this row.
        from budgets.services.alerts import thresholds_cross

        thresholds_cross(budget=budget, period=period, before_nanos=0)
    return period, True


def ledger_coverage(budget: Budget) -> Q:
    """The ledger rows ``budget`` counts, whatever the time range: its node (agent, sprint, project
    or the whole organization) and its model filter — :func:`covers` as a query filter. The
    organization is not part of it: callers filter ``organization_id`` themselves (an index lead)."""
    coverage = Q()
    if budget.agent_id:
        coverage &= Q(agent_id=budget.agent_id)
    elif budget.sprint_id:
        coverage &= Q(sprint_id=budget.sprint_id)
    elif budget.project_id:
        coverage &= Q(project_id=budget.project_id)
    if budget.model_filter:
        coverage &= Q(model=budget.model_filter) | Q(model__endswith="/" + budget.model_filter)
    return coverage


def ledger_nanos_sum(*, where: Q | None = None) -> Sum:
    """``SUM`` of each ledger row's cost rounded half-up to the nano-dollar (the rule settlement
    applies per row), optionally over the rows matching ``where`` only (a conditional aggregate,
    so one query can sum several ranges or budgets). Null (unpriced) costs add nothing; an empty
    sum is None."""
    nanos = Value(Decimal(NANOS_PER_USD), output_field=DecimalField(max_digits=24, decimal_places=0))
    return Sum(Round(F("cost_usd") * nanos), filter=where, output_field=DecimalField(max_digits=30, decimal_places=0))
