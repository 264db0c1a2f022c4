"""The private query builders behind the selectors: filters, the merged rollups + tail aggregate,
labels and order."""

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, DateField, F, Q, QuerySet, Subquery, Sum, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, TruncDate, TruncMonth, TruncWeek

from config.errors import ValidationFailed
from costs.analytics.figures import (
    _COUNTS,
    DIMENSIONS,
    METRICS,
    TAG_PREFIX,
    TIME_DIMENSIONS,
    BreakdownRow,
    SpendFigures,
)
from costs.analytics.ranges import local_midnight
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

_TAG_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
# Before any ledger row: the watermark of an organization that was never rolled up.
NEVER_ROLLED = datetime(1970, 1, 1, tzinfo=UTC)
# Later than any ledger row's received_at: the tail's upper bound, a planner hint (see _tail_rows).
RECEIVED_MAX = datetime(9999, 1, 1, tzinfo=UTC)


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
