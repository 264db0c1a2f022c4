"""Spend analytics (issue 6): totals, breakdowns, trends, today / month to date, top spenders and
unpriced usage of one organization — the reads behind ``/api/v1/reports/`` and the report pages.

Where the figures come from (ADR 0006): :class:`~costs.models.DailyRollup` holds exactly the ledger
rows received before the organization's :class:`~costs.models.RollupState` watermark; the rows
received since (the *tail*: the last minutes) are read from the ledger and aggregated the same way,
days taken in the organization's time zone. Every figure is rollups + tail: exact and current, and
fast, because the tail is small and rollups are few rows per day. Both parts are one SQL statement
(``UNION ALL``, the watermark read in a subquery of it), so they see one snapshot: a rollup run
committing meanwhile can neither double-count nor drop the rows it moves.

Grouping by a tag (``tag:<key>``) is the exception: rollups carry no tags, so it reads the ledger
itself — the slow path, limited to :data:`MAX_TAG_RANGE_DAYS` days.

Conventions:

- A date range is ``start`` .. ``end``, both included, in organization-local days.
- ``week`` buckets are ISO weeks labelled by their Monday, ``month`` buckets calendar months labelled by
  their first day — both of organization-local days. A bucket cut by the range counts only the
  range's days.
- Money is Decimal USD (the ledger's 12 decimal places); unpriced requests count in ``requests``
  and ``unpriced_requests`` and add no cost, so averages over ranges with unpriced usage understate.
- ``cost_per_request`` = cost / requests, ``cost_per_1k_tokens`` = cost x 1,000 / (prompt + completion
  tokens), rounded half-up to 12 decimal places; None when the divisor is 0.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Count, DateField, F, Q, QuerySet, Subquery, Sum, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, TruncDate, TruncMonth, TruncWeek

from config.errors import ValidationFailed
from costs.models import (
    Agent,
    CostSource,
    DailyRollup,
    Organization,
    Project,
    RollupState,
    Sprint,
    UsageRecord,
    UsageStatus,
)
from costs.services.rollups import rollup_watermark

DIMENSIONS = ("org", "project", "sprint", "agent", "model", "provider", "operation", "day", "week", "month")
TIME_DIMENSIONS = ("day", "week", "month")
TAG_PREFIX = "tag:"
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
# Longest date range of any report, in days (both ends included).
MAX_RANGE_DAYS = 366
# Longest range of a tag breakdown: it reads the ledger, not the rollups.
MAX_TAG_RANGE_DAYS = 31
TOP_BY = ("agent", "project", "model")

MONEY_PLACES = Decimal("1e-12")
# Before any ledger row: the watermark of an organization that was never rolled up.
NEVER_ROLLED = datetime(1970, 1, 1, tzinfo=UTC)
# Later than any ledger row's received_at: the tail's upper bound, a planner hint (see _tail_rows).
RECEIVED_MAX = datetime(9999, 1, 1, tzinfo=UTC)

_COUNTS = (
    "requests",
    "error_requests",
    "unpriced_requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
)
METRICS = (*_COUNTS, "cost_usd")


# --- shapes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpendFigures:
    """What some usage cost and consumed. Tokens follow the ledger's convention (cached and
    cache-write tokens are part of ``prompt_tokens``, reasoning tokens of ``completion_tokens``)."""

    requests: int = 0
    error_requests: int = 0
    unpriced_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_per_request(self) -> Decimal | None:
        """USD per request (unpriced requests included), or None without requests."""
        return _ratio(self.cost_usd, self.requests)

    @property
    def cost_per_1k_tokens(self) -> Decimal | None:
        """USD per 1,000 prompt + completion tokens, or None without tokens."""
        return _ratio(self.cost_usd * 1000, self.total_tokens)

    def metrics(self) -> dict:
        return {name: getattr(self, name) for name in METRICS}


@dataclass(frozen=True, slots=True)
class BreakdownRow(SpendFigures):
    """One group of a breakdown. ``key`` maps each dimension to its value: ``org`` and ``project``
    slugs, ``sprint`` slug (None for usage outside sprints), ``agent`` name, ``model``,
    ``provider``, ``operation`` as recorded, ``day`` / ``week`` / ``month`` the bucket's first day,
    ``tag:<key>`` the tag's value (None when absent). Grouping by ``agent`` or ``sprint`` also
    names their ``project`` (agents and sprints are named per project), which splits nothing."""

    key: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrendPoint(SpendFigures):
    """One bucket of a trend: ``period`` is its first day (the day, the Monday, the 1st)."""

    period: date = date.min


@dataclass(frozen=True, slots=True)
class CurrentSpend:
    """Today and the month so far, in the organization's time zone, at ``now``."""

    today: date
    month_start: date
    today_figures: SpendFigures
    month_to_date: SpendFigures


@dataclass(frozen=True, slots=True)
class UnpricedRow:
    """Usage of one model (as recorded, with its provider) that had no price."""

    model: str
    provider: str
    unpriced_requests: int
    first_day: date
    last_day: date


def _ratio(amount: Decimal, count: int) -> Decimal | None:
    if not count:
        return None
    return (amount / count).quantize(MONEY_PLACES, rounding=ROUND_HALF_UP)


# --- selectors ----------------------------------------------------------------------------------


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


# --- ranges and buckets -------------------------------------------------------------------------


def bucket_start(day: date, interval: str) -> date:
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day


def bucket_starts(start: date, end: date, interval: str) -> list[date]:
    """The first day of every ``interval`` bucket that ``start`` .. ``end`` touches."""
    buckets, current = [], bucket_start(start, interval)
    while current <= end:
        buckets.append(current)
        if interval == "week":
            current += timedelta(days=7)
        elif interval == "month":
            current = (current.replace(day=28) + timedelta(days=4)).replace(day=1)
        else:
            current += timedelta(days=1)
    return buckets


def local_midnight(day: date, organization: Organization) -> datetime:
    """The instant an organization-local day begins (UTC)."""
    return datetime.combine(day, time(0), tzinfo=organization.tzinfo).astimezone(UTC)


def check_range(start: date, end: date, max_days: int) -> None:
    if end < start:
        raise ValidationFailed("The date range is reversed.", fields={"end": ["Must not be before start."]})
    if (end - start).days + 1 > max_days:
        raise ValidationFailed(
            "The date range is too long.", fields={"end": [f"The range may span at most {max_days} days."]}
        )


def _dimensions(group_by: Iterable[str]) -> list[str]:
    dims, errors = [], []
    for dim in group_by:
        if dim.startswith(TAG_PREFIX):
            if not _TAG_KEY.match(dim[len(TAG_PREFIX) :]):
                errors.append(f"{dim!r}: a tag key is 1-64 letters, digits, '_', '.' or '-'.")
        elif dim not in DIMENSIONS:
            errors.append(f"Unknown dimension {dim!r}; choose from {', '.join(DIMENSIONS)} or tag:<key>.")
        if dim in dims:
            errors.append(f"{dim!r} is named twice.")
        dims.append(dim)
    if sum(d in TIME_DIMENSIONS for d in dims) > 1:
        errors.append("Group by at most one of day, week, month.")
    if sum(d.startswith(TAG_PREFIX) for d in dims) > 1:
        errors.append("Group by at most one tag.")
    if errors:
        raise ValidationFailed(fields={"group_by": errors})
    return dims


def _filters(
    *,
    project: Project | None = None,
    sprint: Sprint | None = None,
    agent: Agent | None = None,
    model: str | None = None,
    provider: str | None = None,
    operation: str | None = None,
) -> Q:
    """Filters on the columns rollups and ledger share (the same Q serves both)."""
    where = Q()
    if project is not None:
        where &= Q(project_id=project.pk)
    if sprint is not None:
        where &= Q(sprint_id=sprint.pk)
    if agent is not None:
        where &= Q(agent_id=agent.pk)
    if model:
        where &= Q(model=model) | Q(model__endswith="/" + model)
    if provider is not None:
        where &= Q(provider=provider)
    if operation:
        where &= Q(operation=operation)
    return where


# --- the merged aggregate -----------------------------------------------------------------------


def _columns(dims: list[str]) -> list[str]:
    """The SQL grouping columns for ``dims``: ``org`` is constant (one organization per query) and
    needs none; ``agent`` / ``sprint`` bring their ``project`` along."""
    columns = []
    for dim in dims:
        if dim == "org":
            continue
        if dim in ("agent", "sprint") and "project" not in columns:
            columns.append("project")
        if dim not in columns:
            columns.append(dim)
    return columns


def _rollup_rows(organization: Organization, start: date, end: date) -> QuerySet:
    return DailyRollup.objects.filter(organization_id=organization.pk, day__gte=start, day__lte=end).order_by()


def _watermark(organization: Organization) -> Coalesce:
    """The organization's ``rolled_until``, as a subquery of the statement that uses it."""
    state = RollupState.objects.filter(organization_id=organization.pk).values("rolled_until")
    return Coalesce(Subquery(state[:1]), Value(NEVER_ROLLED))


def _ledger_rows(organization: Organization, start: date, end: date) -> QuerySet:
    return UsageRecord.objects.filter(
        organization_id=organization.pk,
        occurred_at__gte=local_midnight(start, organization),
        occurred_at__lt=local_midnight(end + timedelta(days=1), organization),
    ).order_by()


def _tail_rows(organization: Organization, start: date, end: date, *, narrowed: bool = False) -> QuerySet:
    """Ledger rows in the range that the rollups do not hold yet: received at or after the watermark,
    read in a subquery of the same statement (one snapshot with the rollups).

    The other bounds change no row; they are for the planner (figures: ``manage.py bench_reports``).
    Alone, ``received_at >= (subquery)`` is guessed to keep a third of the ledger, so the planner scans
    the whole date range (over a second on 10M rows); with an upper bound (no row is received after
    :data:`RECEIVED_MAX`) it is a range with an unknown end, guessed at 0.5 %, and the tail — minutes of
    rows — is read on the (organization, received_at) index. When the caller ``narrowed`` the rows to
    a project, sprint, agent or model, 0.5 % is still enough for the planner to AND that index with
    the node's (node, occurred_at) index, reading the node's whole date range (~130 ms per query on
    10M rows); the watermark read just before, as a literal, shows it the tail's real size. That bound
    is implied by the subquery's (a watermark never moves backwards, so the statement's own is at
    least as late), costs one indexed query, and is only added when it pays."""
    rows = _ledger_rows(organization, start, end).filter(
        received_at__gte=_watermark(organization), received_at__lt=RECEIVED_MAX
    )
    if narrowed:
        rows = rows.filter(received_at__gte=rollup_watermark(organization=organization))
    return rows


def _rollup_key(column: str):
    if column == "week":
        return TruncWeek("day", output_field=DateField())
    if column == "month":
        return TruncMonth("day", output_field=DateField())
    return F(_FIELD.get(column, column))


def _ledger_key(column: str, organization: Organization):
    tz = organization.tzinfo
    if column == "day":
        return TruncDate("occurred_at", tzinfo=tz)
    if column == "week":
        return TruncWeek("occurred_at", tzinfo=tz, output_field=DateField())
    if column == "month":
        return TruncMonth("occurred_at", tzinfo=tz, output_field=DateField())
    if column.startswith(TAG_PREFIX):
        return KeyTextTransform(column[len(TAG_PREFIX) :], "tags")
    return F(_FIELD.get(column, column))


_FIELD = {"project": "project_id", "sprint": "sprint_id", "agent": "agent_id"}

_ROLLUP_SUMS = {name: Sum(name) for name in METRICS}


def _ledger_sums() -> dict:
    return {
        "requests": Count("id"),
        "error_requests": Count("id", filter=Q(status=UsageStatus.ERROR)),
        "unpriced_requests": Count("id", filter=Q(cost_source=CostSource.UNPRICED)),
        **{name: Sum(name) for name in _COUNTS[3:]},
        "cost_usd": Sum("cost_usd"),
    }


def _grouped(queryset: QuerySet, keys: dict, sums: dict) -> QuerySet:
    # Keys are annotations named k0, k1, ... on both sides, in the same order, so the UNION's
    # columns line up; without keys, a constant makes one aggregate row over everything.
    keys = keys or {"k0": Value(0)}
    return queryset.annotate(**keys).values(*keys).annotate(**sums)


def _groups(
    organization: Organization,
    start: date,
    end: date,
    columns: list[str],
    where: Q,
    *,
    tag: str | None = None,
    unpriced_only: bool = False,
) -> dict[tuple, SpendFigures]:
    """``{key tuple: figures}`` grouped by ``columns``: rollups + tail in one statement, or the
    ledger alone when grouping by a tag."""
    names = [f"k{index}" for index in range(len(columns))]
    ledger_keys = {name: _ledger_key(column, organization) for name, column in zip(names, columns, strict=True)}
    if tag is not None:
        ledger = _ledger_rows(organization, start, end).filter(where)
        queryset = _grouped(ledger, ledger_keys, _ledger_sums())
    else:
        rollup_keys = {name: _rollup_key(column) for name, column in zip(names, columns, strict=True)}
        rollups = _rollup_rows(organization, start, end).filter(where)
        tail = _tail_rows(organization, start, end, narrowed=bool(where)).filter(where)
        if unpriced_only:
            rollups = rollups.filter(unpriced_requests__gt=0)
            tail = tail.filter(cost_source=CostSource.UNPRICED)
        queryset = _grouped(rollups, rollup_keys, _ROLLUP_SUMS).union(
            _grouped(tail, ledger_keys, _ledger_sums()), all=True
        )
    totals: dict[tuple, list] = {}
    for row in queryset:
        if row["requests"] is None or not row["requests"]:
            continue  # the constant-key aggregate of an empty side
        key = tuple(_key_value(column, row[name]) for name, column in zip(names, columns, strict=True))
        acc = totals.setdefault(key, [0] * len(_COUNTS) + [Decimal(0)])
        for index, metric in enumerate(METRICS):
            value = row[metric]
            if value is not None:
                acc[index] += value if metric == "cost_usd" else int(value)
    return {key: SpendFigures(*values) for key, values in totals.items()}


def _key_value(column: str, value):
    if column in TIME_DIMENSIONS:
        return _as_date(value)
    return value


def _as_date(value) -> date:
    # A UNION's column takes one type for both sides: PostgreSQL may answer a date as a timestamp.
    return value.date() if isinstance(value, datetime) else value


def _sum(items: Iterable[SpendFigures]) -> SpendFigures:
    acc = [0] * len(_COUNTS) + [Decimal(0)]
    for figures in items:
        for index, metric in enumerate(METRICS):
            acc[index] += getattr(figures, metric)
    return SpendFigures(*acc)


# --- labels and order ---------------------------------------------------------------------------


def _label(
    organization: Organization, dims: list[str], columns: list[str], groups: dict[tuple, SpendFigures]
) -> list[BreakdownRow]:
    """Key tuples of ids -> :class:`BreakdownRow` keys of slugs and names (one query per kind)."""

    def ids(column: str) -> set:
        if column not in columns:
            return set()
        position = columns.index(column)
        return {key[position] for key in groups if key[position] is not None}

    lookups = {"project": (Project, "slug"), "sprint": (Sprint, "slug"), "agent": (Agent, "name")}
    names: dict[str, dict] = {}
    for column, (model, attribute) in lookups.items():
        wanted = ids(column)
        names[column] = dict(model.objects.filter(pk__in=wanted).values_list("pk", attribute)) if wanted else {}
    output = [("org", None) if dim == "org" else (dim, dim) for dim in dims]
    # The implied project goes just before the agent / sprint that brought it.
    if "project" in columns and "project" not in dims:
        first = next(i for i, (dim, _) in enumerate(output) if dim in ("agent", "sprint"))
        output.insert(first, ("project", "project"))
    rows = []
    for key, figures in groups.items():
        values = dict(zip(columns, key, strict=True))
        labelled = {}
        for dim, column in output:
            if column is None:
                labelled[dim] = organization.slug
            elif column in names:
                labelled[dim] = names[column].get(values[column]) if values[column] is not None else None
            else:
                labelled[dim] = values[column]
        rows.append(BreakdownRow(key=labelled, **figures.metrics()))
    return rows


def _order(row: BreakdownRow, dims: list[str]) -> tuple:
    time_key = tuple(row.key[d] for d in dims if d in TIME_DIMENSIONS)
    rest = tuple("" if row.key[d] is None else str(row.key[d]) for d in row.key if d not in TIME_DIMENSIONS)
    return (*time_key, -row.cost_usd, rest)
