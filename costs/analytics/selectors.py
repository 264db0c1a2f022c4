"""The public reads of spend analytics: breakdowns, totals, trends, today / month to date, top
spenders, unpriced usage and daily series."""

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal

from django.db.models import F, Q, Sum
from django.db.models.functions import TruncDate

from config.errors import ValidationFailed
from costs.analytics.figures import (
    MAX_RANGE_DAYS,
    MAX_TAG_RANGE_DAYS,
    TAG_PREFIX,
    TIME_DIMENSIONS,
    TOP_BY,
    BreakdownRow,
    CurrentSpend,
    SpendFigures,
    TrendPoint,
    UnpricedRow,
)
from costs.analytics.queries import (
    _as_date,
    _columns,
    _dimensions,
    _filters,
    _groups,
    _label,
    _order,
    _rollup_rows,
    _sum,
    _tail_rows,
)
from costs.analytics.ranges import bucket_starts, check_range
from costs.models import Agent, Organization, Project, Sprint


def spend_breakdown(
    *,
    organization: Organization,
    start: date,
    end: date,
    group_by: list[str],
    project: Project | None = None,
    sprint: Sprint | None = None,
    agent: Agent | None = None,
    model: str | None = None,
    provider: str | None = None,
    operation: str | None = None,
) -> list[BreakdownRow]:
    """Spend of ``organization`` from ``start`` to ``end`` (local days, both included) grouped by
    ``group_by`` (dimensions of :data:`DIMENSIONS` or ``tag:<key>``), optionally narrowed to one
    project / sprint / agent / model / provider / operation. ``model`` also matches the model
    behind a provider prefix (``gpt-4o`` matches ``openai/gpt-4o``), as budgets do.

    Ordered by time bucket (if grouped by one), then cost descending, then key. Groups with no
    usage are absent (see :func:`spend_trend` for a zero-filled series). Raises
    :class:`~config.errors.ValidationFailed` for an unknown dimension or a range that is reversed
    or too long."""
    dims = _dimensions(group_by)
    tag = next((d[len(TAG_PREFIX) :] for d in dims if d.startswith(TAG_PREFIX)), None)
    check_range(start, end, MAX_TAG_RANGE_DAYS if tag else MAX_RANGE_DAYS)
    where = _filters(project=project, sprint=sprint, agent=agent, model=model, provider=provider, operation=operation)
    columns = _columns(dims)
    groups = _groups(organization, start, end, columns, where, tag=tag)
    rows = _label(organization, dims, columns, groups)
    return sorted(rows, key=lambda row: _order(row, dims))


def breakdown_regroup(rows: Iterable[BreakdownRow], *, group_by: list[str]) -> list[BreakdownRow]:
    """A breakdown by fewer dimensions summed from the rows of a finer one over the same range —
    e.g. one ``project, agent, model`` breakdown answers the by-project, by-agent and by-model
    tables of a page, in one query instead of three. Equal to :func:`spend_breakdown` with
    ``group_by`` (same keys, figures and order) when every dimension of ``group_by`` (and the
    project of an agent or sprint) is among the finer rows' keys."""
    dims = _dimensions(group_by)
    named: list[str] = []  # key order as spend_breakdown's: an agent's or sprint's project before it
    for dim in dims:
        if dim in ("agent", "sprint") and "project" not in named and "project" not in dims:
            named.append("project")
        named.append(dim)
    groups: dict[tuple, list[BreakdownRow]] = {}
    for row in rows:
        groups.setdefault(tuple(row.key[d] for d in named), []).append(row)
    out = [
        BreakdownRow(**_sum(members).metrics(), key=dict(zip(named, key, strict=True)))
        for key, members in groups.items()
    ]
    return sorted(out, key=lambda row: _order(row, dims))


def spend_totals(
    *,
    organization: Organization,
    start: date,
    end: date,
    project: Project | None = None,
    sprint: Sprint | None = None,
    agent: Agent | None = None,
    model: str | None = None,
    provider: str | None = None,
    operation: str | None = None,
) -> SpendFigures:
    """All spend of the range (filters as :func:`spend_breakdown`); zeros when there is none."""
    check_range(start, end, MAX_RANGE_DAYS)
    where = _filters(project=project, sprint=sprint, agent=agent, model=model, provider=provider, operation=operation)
    groups = _groups(organization, start, end, [], where)
    return groups.get((), SpendFigures())


def spend_trend(
    *,
    organization: Organization,
    start: date,
    end: date,
    interval: str = "day",
    project: Project | None = None,
    sprint: Sprint | None = None,
    agent: Agent | None = None,
    model: str | None = None,
    provider: str | None = None,
    operation: str | None = None,
) -> list[TrendPoint]:
    """Spend per ``interval`` ("day", "week" or "month") bucket from ``start`` to ``end``, every
    bucket present (zeros where nothing was spent), oldest first. Buckets cut by the range count
    only the range's days."""
    if interval not in TIME_DIMENSIONS:
        raise ValidationFailed(fields={"interval": [f"Choose one of: {', '.join(TIME_DIMENSIONS)}."]})
    check_range(start, end, MAX_RANGE_DAYS)
    where = _filters(project=project, sprint=sprint, agent=agent, model=model, provider=provider, operation=operation)
    groups = _groups(organization, start, end, [interval], where)
    return [
        TrendPoint(period=bucket, **groups.get((bucket,), SpendFigures()).metrics())
        for bucket in bucket_starts(start, end, interval)
    ]


def spend_today_and_month_to_date(
    *,
    organization: Organization,
    now: datetime,
    **filters,
) -> CurrentSpend:
    """Spend of the organization-local day containing ``now`` and of its month so far;
    ``filters`` as :func:`spend_breakdown`'s."""
    today = now.astimezone(organization.tzinfo).date()
    month_start = today.replace(day=1)
    where = _filters(**filters)
    days = _groups(organization, month_start, today, ["day"], where)
    month = _sum(days.values())
    return CurrentSpend(
        today=today,
        month_start=month_start,
        today_figures=days.get((today,), SpendFigures()),
        month_to_date=month,
    )


def top_spenders(
    *,
    organization: Organization,
    start: date,
    end: date,
    by: str = "agent",
    limit: int = 10,
    **filters,
) -> list[BreakdownRow]:
    """The ``limit`` agents, projects or models (``by``) that cost most in the range, costliest
    first (ties by name); ``filters`` as :func:`spend_breakdown`'s."""
    if by not in TOP_BY:
        raise ValidationFailed(fields={"by": [f"Choose one of: {', '.join(TOP_BY)}."]})
    return spend_breakdown(organization=organization, start=start, end=end, group_by=[by], **filters)[:limit]


def unpriced_usage(
    *,
    organization: Organization,
    start: date,
    end: date,
    **filters,
) -> list[UnpricedRow]:
    """The models used without a price in the range: how many requests went unpriced and on which
    days first and last, most requests first; ``filters`` as :func:`spend_breakdown`'s. (Rollups
    count unpriced requests but do not split their tokens from priced ones: no token figures.)"""
    check_range(start, end, MAX_RANGE_DAYS)
    where = _filters(**filters)
    groups = _groups(organization, start, end, ["model", "provider", "day"], where, unpriced_only=True)
    folded: dict[tuple[str, str], list] = {}
    for (model, provider, day), figures in groups.items():
        if not figures.unpriced_requests:
            continue
        entry = folded.setdefault((model, provider), [0, day, day])
        entry[0] += figures.unpriced_requests
        entry[1], entry[2] = min(entry[1], day), max(entry[2], day)
    rows = [UnpricedRow(m, p, count, first, last) for (m, p), (count, first, last) in folded.items()]
    return sorted(rows, key=lambda row: (-row.unpriced_requests, row.model, row.provider))


def spend_daily_series(
    *, organization: Organization, start: date, end: date, series: dict[str, Q]
) -> dict[str, dict[date, Decimal]]:
    """Cost per local day for several filters at once: ``{name: {day: USD}}`` for each ``name`` of
    ``series``, whose filters name columns rollups and ledger share (``project_id``, ``sprint_id``,
    ``agent_id``, ``model``, ``provider``, ``operation``) — e.g. budgets' coverage. One query; days
    without spend are absent."""
    check_range(start, end, MAX_RANGE_DAYS)
    if not series:
        return {}
    names = {name: f"s{index}" for index, name in enumerate(series)}
    rollup_sums = {names[n]: Sum("cost_usd", filter=q) for n, q in series.items()}
    ledger_sums = {names[n]: Sum("cost_usd", filter=q) for n, q in series.items()}
    rollups = _rollup_rows(organization, start, end).annotate(k0=F("day")).values("k0").annotate(**rollup_sums)
    tail = (
        _tail_rows(organization, start, end)
        .annotate(k0=TruncDate("occurred_at", tzinfo=organization.tzinfo))
        .values("k0")
        .annotate(**ledger_sums)
    )
    result: dict[str, dict[date, Decimal]] = {name: {} for name in series}
    for row in rollups.union(tail, all=True):
        day = _as_date(row["k0"])
        for name, alias in names.items():
            if row[alias] is not None:
                result[name][day] = result[name].get(day, Decimal(0)) + row[alias]
    return result
