"""Reads of budgets for operators: the live status of each budget in its current period.

One call answers for any number of budgets with a fixed number of queries: the budgets (the caller's
queryset), the sprints their sprint periods need (only if any), their current :class:`BudgetPeriod`
rows (one query), and — only for budgets whose current period has no live row yet — one aggregate
over the ledger that sums every such budget at once.

A budget with no live row for its current period (nobody checked or spent against it since the
period began, or it was just created or reshaped) shows what the ledger says it spent
(``ledger_spend_nanos`` semantics, read-only, nothing reserved). Reads never create period rows:
the first check or settlement does (``period_ensure``), initialised from the same ledger sum.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Q, QuerySet
from django.utils import timezone

from budgets.models import Budget, BudgetAlert, BudgetPeriod, PeriodKind, nanos_to_usd
from budgets.services.periods import Bounds, ledger_coverage, ledger_nanos_sum, period_bounds
from costs.models import Sprint, UsageRecord
from costs.services.scope import KeyScope


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
    return {p.budget_id: p for p in BudgetPeriod.objects.filter(condition)}


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
