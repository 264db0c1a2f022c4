"""Daily rollups of the usage ledger (ADR 0006).

Invariant, per organization: :class:`~costs.models.DailyRollup` holds exactly the ledger rows with
``received_at < RollupState.rolled_until`` (the *watermark*) — no more, no less. Reports read the
rollups plus the *tail* (ledger rows with ``received_at >= rolled_until``), so they are exact at any
moment, however far behind the job is.

Why ``received_at`` and not ``occurred_at``: usage for an old day may arrive today (offline agents,
imports, retries), so "which days changed" is only answerable by when rows were *written*. A day
touched by any row received in ``[old watermark, new watermark)`` is recomputed wholly from the
ledger (delete its buckets, insert the GROUP BY), which is idempotent and also repairs a day
whatever its buckets held before.

``received_at`` is the wall clock of the ingesting process, stamped *before* its transaction
commits, so a row with ``received_at < now`` may still be invisible to us. The new watermark is
therefore ``now - SPENDGUARD_ROLLUP_LAG_SECONDS`` (default 60 s, far longer than any ingest
transaction): by then every row stamped before it has committed (or rolled back). A row committing
later than the lag (a stuck transaction, a clock far off between web and worker hosts) would sit
below the watermark uncounted until its day is recomputed again (any later row for that day, or
``manage.py rollup_usage --since/--until``).

Concurrency: each organization is rolled in its own transaction under a row lock on its
``RollupState``, taken with ``SKIP LOCKED`` by the periodic refresh — two refreshes never work on
one organization at the same time; the second skips it (the first is already doing the work) — and
waited for by a rebuild. A watermark never moves backwards.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import TruncDate
from django.utils import timezone

from costs.models import CostSource, DailyRollup, Organization, RollupState, UsageRecord, UsageStatus

# Where a new organization's watermark starts: its first refresh rolls up its whole ledger (the scan
# of "rows received since" is the same one every refresh does, so nothing is gained by starting at
# the organization's first row, and the epoch needs no query and is never later than any row).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_BUCKET = ("day", "project_id", "sprint_id", "agent_id", "model", "provider", "operation")
_TOKENS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens", "reasoning_tokens")
# The occurred_at range scanned for a run of local days is its local midnights in UTC, widened by this
# much: the database's own local date of each row then picks the rows exactly, so a boundary row is
# never lost if PostgreSQL's time zone rules and Python's (zoneinfo) disagree around a DST change.
_MARGIN = timedelta(hours=1)


@dataclass(frozen=True)
class OrganizationRollup:
    """What one organization's refresh or rebuild did."""

    organization_id: int
    rolled_from: datetime  # the watermark before
    rolled_until: datetime  # the watermark after (== rolled_from for a rebuild or a no-op)
    days: list[date]  # the organization-local days recomputed
    buckets: int  # DailyRollup rows written for those days


@dataclass
class RefreshReport:
    until: datetime
    organizations: list[OrganizationRollup] = field(default_factory=list)
    # Organizations another run held locked (it is rolling them up now), so this run left them.
    skipped: list[int] = field(default_factory=list)

    @property
    def days(self) -> int:
        return sum(len(org.days) for org in self.organizations)

    @property
    def buckets(self) -> int:
        return sum(org.buckets for org in self.organizations)


def rollup_watermark(*, organization: Organization) -> datetime:
    """How far ``organization``'s rollups reach: every ledger row with ``received_at`` before the
    returned instant is counted in ``DailyRollup`` and no later one is; :data:`EPOCH` before the
    first refresh (everything is tail).

    For report authors: a refresh commits new buckets and the new watermark together, but two
    separate statements may straddle that commit. Read the watermark, then the rollups, then the
    watermark again and retry if it moved (or read the tail with a subquery on ``RollupState``
    inside the same statement as the rollups); the tail is then the ledger rows with
    ``received_at >= watermark``, read whenever (the ledger is append-only).
    """
    rolled_until = (
        RollupState.objects.filter(organization_id=organization.pk).values_list("rolled_until", flat=True).first()
    )
    return rolled_until if rolled_until is not None else EPOCH


def rollups_refresh(*, until: datetime | None = None, organization_id: int | None = None) -> RefreshReport:
    """Roll every organization's (or the one given) ledger up to the watermark ``until``.

    ``until`` defaults to now minus ``SPENDGUARD_ROLLUP_LAG_SECONDS`` and may not be later than that
    (``ValueError``): rows stamped before a later instant may not have committed yet, and would be
    missed for good. Per organization, in one transaction: the local days of the rows received in
    ``[watermark, until)`` are recomputed from every ledger row received before ``until``, and the
    watermark becomes ``until``. An ``until`` at or before an organization's watermark does nothing
    there (watermarks never move backwards). Safe to run twice, late, or concurrently (a run skips
    the organizations another run holds; see ``RefreshReport.skipped``).
    """
    latest = timezone.now() - timedelta(seconds=settings.SPENDGUARD_ROLLUP_LAG_SECONDS)
    if until is None:
        until = latest
    elif until > latest:
        raise ValueError(
            f"until={until.isoformat()} is later than now - SPENDGUARD_ROLLUP_LAG_SECONDS "
            f"({latest.isoformat()}): rows received before it may not be committed yet."
        )
    organizations = Organization.objects.order_by("pk").only("pk", "timezone")
    if organization_id is not None:
        organizations = organizations.filter(pk=organization_id)
    organizations = list(organizations)
    _ensure_states([org.pk for org in organizations])
    report = RefreshReport(until=until)
    for organization in organizations:
        done = _refresh_organization(organization, until=until)
        if done is None:
            report.skipped.append(organization.pk)
        else:
            report.organizations.append(done)
    return report


@transaction.atomic
def rollups_rebuild(*, organization_id: int, start: date, end: date) -> OrganizationRollup:
    """Recompute ``organization_id``'s rollups of the local days ``start`` to ``end`` (both
    included) from the ledger rows received before its current watermark — the same per-day
    function the refresh uses, so the invariant holds and the result equals what incremental
    refreshes built. For repairs (e.g. after the organization's time zone changed, which moves
    every day boundary: rebuild from its first day to today) and for the benchmark. Waits for a
    refresh that holds the organization; never moves the watermark."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    organization = Organization.objects.only("pk", "timezone").get(pk=organization_id)
    _ensure_states([organization_id])
    state = RollupState.objects.select_for_update().get(organization_id=organization_id)
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    buckets = _recompute_days(organization, days, received_before=state.rolled_until)
    return OrganizationRollup(
        organization_id=organization_id,
        rolled_from=state.rolled_until,
        rolled_until=state.rolled_until,
        days=days,
        buckets=buckets,
    )


def _ensure_states(organization_ids: list[int]) -> None:
    """Create the missing watermark rows at the epoch. Concurrent runs may race here: the unique
    organization column lets one insert win and the others ignore the conflict."""
    existing = set(
        RollupState.objects.filter(organization_id__in=organization_ids).values_list("organization_id", flat=True)
    )
    missing = [RollupState(organization_id=pk, rolled_until=EPOCH) for pk in organization_ids if pk not in existing]
    if missing:
        RollupState.objects.bulk_create(missing, ignore_conflicts=True)


@transaction.atomic
def _refresh_organization(organization: Organization, *, until: datetime) -> OrganizationRollup | None:
    state = RollupState.objects.select_for_update(skip_locked=True).filter(organization_id=organization.pk).first()
    if state is None:
        return None
    rolled_from = state.rolled_until
    if until <= rolled_from:
        return OrganizationRollup(organization.pk, rolled_from, rolled_from, days=[], buckets=0)
    days = _days_received(organization, since=rolled_from, until=until)
    buckets = _recompute_days(organization, days, received_before=until)
    state.rolled_until = until
    state.save(update_fields=["rolled_until", "updated_at"])
    return OrganizationRollup(organization.pk, rolled_from, until, days=days, buckets=buckets)


def _days_received(organization: Organization, *, since: datetime, until: datetime) -> list[date]:
    """The organization-local days of the ledger rows received in ``[since, until)`` (one query, on
    the (organization, received_at) index)."""
    days = (
        UsageRecord.objects.filter(organization_id=organization.pk, received_at__gte=since, received_at__lt=until)
        .annotate(day=TruncDate("occurred_at", tzinfo=organization.tzinfo))
        .order_by()  # the model's default ordering would otherwise join the DISTINCT
        .values_list("day", flat=True)
        .distinct()
    )
    return sorted(days)


def _recompute_days(organization: Organization, days: list[date], *, received_before: datetime) -> int:
    """Replace the buckets of ``days`` with the GROUP BY of the ledger rows received before
    ``received_before``; return how many buckets were written. Runs of consecutive days are done
    one range at a time, so the occurred_at index is scanned once per range, never across a gap."""
    written = 0
    for first, last in _ranges(days):
        DailyRollup.objects.filter(organization_id=organization.pk, day__gte=first, day__lte=last).delete()
        if connection.vendor == "postgresql":
            written += _insert_postgresql(organization, first, last, received_before=received_before)
        else:
            written += _insert_portable(organization, first, last, received_before=received_before)
    return written


def _ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def _utc_bounds(first: date, last: date, tz: zoneinfo.ZoneInfo) -> tuple[datetime, datetime]:
    """The instants from local midnight before ``first`` to local midnight after ``last``, in UTC,
    widened by :data:`_MARGIN`. (A midnight skipped by a DST change maps to the change itself.)"""
    start = datetime.combine(first, time.min, tzinfo=tz).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=tz).astimezone(UTC)
    return start - _MARGIN, end + _MARGIN


_ROLLUP_COLUMNS = (
    "organization_id, day, project_id, sprint_id, agent_id, model, provider, operation, requests, "
    "error_requests, unpriced_requests, prompt_tokens, completion_tokens, cached_tokens, cache_creation_tokens, "
    "reasoning_tokens, cost_usd"
)


def _insert_postgresql(organization: Organization, first: date, last: date, *, received_before: datetime) -> int:
    """One ``INSERT ... SELECT ... GROUP BY`` in the database; money is summed as numeric, exactly.

    The planner cannot estimate the number of buckets (it multiplies the columns' distinct counts and
    expects about one bucket per row), so it sorts every row to group them; a hash aggregate is ~3x
    faster (hundreds of buckets from ~300K rows). Sorting is therefore disabled, and JIT compiling
    (tens of ms, for a statement run once) too, for this statement only. Figures: ADR 0006."""
    low, high = _utc_bounds(first, last, organization.tzinfo)
    sql = f"""
        INSERT INTO {DailyRollup._meta.db_table} ({_ROLLUP_COLUMNS})
        SELECT organization_id, (occurred_at AT TIME ZONE %(tz)s)::date AS local_day,
               project_id, sprint_id, agent_id, model, provider, operation,
               count(*), count(*) FILTER (WHERE status = %(error)s),
               count(*) FILTER (WHERE cost_source = %(unpriced)s),
               sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens),
               sum(cache_creation_tokens), sum(reasoning_tokens), coalesce(sum(cost_usd), 0)
        FROM {UsageRecord._meta.db_table}
        WHERE organization_id = %(organization)s
          AND occurred_at >= %(low)s AND occurred_at < %(high)s
          AND received_at < %(received_before)s
          AND (occurred_at AT TIME ZONE %(tz)s)::date BETWEEN %(first)s AND %(last)s
        GROUP BY organization_id, local_day, project_id, sprint_id, agent_id, model, provider, operation
    """
    params = {
        "tz": organization.timezone,
        "error": UsageStatus.ERROR,
        "unpriced": CostSource.UNPRICED,
        "organization": organization.pk,
        "low": low,
        "high": high,
        "received_before": received_before,
        "first": first,
        "last": last,
    }
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_sort'), current_setting('jit')")
        enable_sort, jit = cursor.fetchone()
        cursor.execute("SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)")
        cursor.execute(sql, params)
        written = cursor.rowcount
        # (Were the INSERT to fail, rolling the transaction back would undo these settings anyway.)
        cursor.execute("SELECT set_config('enable_sort', %s, true), set_config('jit', %s, true)", [enable_sort, jit])
        return written


def _insert_portable(organization: Organization, first: date, last: date, *, received_before: datetime) -> int:
    """Other databases (SQLite, the embedded default): group in Python. SQLite sums decimals as
    floats, so the money is added here as ``Decimal`` to stay exact; the local day is still the
    database's (Django's ``TruncDate`` with the organization's zone), as in the query that found
    the days."""
    tz: zoneinfo.ZoneInfo = organization.tzinfo
    low, high = _utc_bounds(first, last, tz)
    rows = (
        UsageRecord.objects.filter(
            organization_id=organization.pk, occurred_at__gte=low, occurred_at__lt=high, received_at__lt=received_before
        )
        .annotate(day=TruncDate("occurred_at", tzinfo=tz))
        .filter(day__gte=first, day__lte=last)
        .order_by()
        .values_list(*_BUCKET, "status", "cost_source", *_TOKENS, "cost_usd")
    )
    sums: dict[tuple, list] = {}
    width = len(_BUCKET)
    for row in rows.iterator(chunk_size=5000):
        key = row[:width]
        status, cost_source = row[width], row[width + 1]
        tokens = row[width + 2 : width + 2 + len(_TOKENS)]
        cost = row[-1]
        bucket = sums.get(key)
        if bucket is None:
            bucket = sums[key] = [0, 0, 0, *([0] * len(_TOKENS)), Decimal(0)]
        bucket[0] += 1
        bucket[1] += status == UsageStatus.ERROR
        bucket[2] += cost_source == CostSource.UNPRICED
        for i, value in enumerate(tokens):
            bucket[3 + i] += value
        if cost is not None:
            bucket[-1] += cost
    objs = [
        DailyRollup(
            organization_id=organization.pk,
            **dict(zip(_BUCKET, key, strict=True)),
            requests=bucket[0],
            error_requests=bucket[1],
            unpriced_requests=bucket[2],
            **dict(zip(_TOKENS, bucket[3:-1], strict=True)),
            cost_usd=bucket[-1],
        )
        for key, bucket in sums.items()
    ]
    DailyRollup.objects.bulk_create(objs, batch_size=500)
    return len(objs)
