"""Settlement: ingested usage releases its reservation and books its actual cost (DESIGN.md flow 2).

:func:`usage_settle` is registered with :func:`costs.services.ingest.register_rows_written_hook`
(``BudgetsConfig.ready()``), so it runs inside the ingest transaction with the rows just written:
the ledger rows, the reservation flips and the counter updates commit or roll back together.

Counters are integer nano-dollars. A row adds ``usd_to_nanos(cost_usd)`` (half-up per row) to
``spent_nanos`` of every covering budget period containing its ``occurred_at`` — the rule
:func:`budgets.services.periods.ledger_spend_nanos` applies to the ledger, so after settlement
``spent_nanos`` equals the ledger sum exactly. Unpriced rows (null cost) add nothing.

Closing a reservation (settled, released, expired) is one guarded status flip,
``UPDATE ... SET status = <new> WHERE id IN (...) AND status = 'held' RETURNING id``; only the flipped
reservations' holds leave ``reserved_nanos``. Settling, releasing or expiring twice therefore has no
effect, whichever of them races.

Lock order, shared with the pre-call check and the periodic jobs so that none of them deadlock:
reservation rows first (the flip), then budget periods created in (budget, start) order, then
counter updates one period at a time in ascending period id.
"""

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from redis import RedisError

from budgets.models import (
    Budget,
    BudgetPeriod,
    CheckContextVersion,
    PeriodKind,
    Reservation,
    ReservationHold,
    ReservationStatus,
    usd_to_nanos,
)
from budgets.services import redis_store
from budgets.services.alerts import thresholds_cross
from budgets.services.periods import Bounds, covers, period_bounds, period_ensure
from config.db import fetch_instances, in_list, row_shape
from costs.models import Organization, Sprint, UsageRecord

logger = logging.getLogger(__name__)

_RESERVATION_TABLE = Reservation._meta.db_table
_PERIOD_TABLE = BudgetPeriod._meta.db_table
_HOLD_TABLE = ReservationHold._meta.db_table


def usage_settle(rows: list[UsageRecord]) -> None:
    """Settle newly written ledger ``rows`` against the budgets (the ingest hook; positional
    ``rows`` because that is the hook's calling convention).

    For the rows of each organization (an ingest batch has one):

    1. close their reservations as ``settled`` — a row with ``reservation_id`` settles that
       reservation (of its organization), a row without one the reservation with its
       ``request_id`` — and take the closed ones' holds off ``reserved_nanos``;
    2. add each priced row's cost to ``spent_nanos`` of every active covering budget's period
       containing ``occurred_at`` (creating the period if needed; a period created here was
       initialised from the ledger, which already holds these rows, so nothing is added to it).

    A fixed number of queries per batch whatever its size: the flip, the holds (if any flipped),
    the budgets, two for sprint-period budgets (only if there are some), the periods, one UPDATE
    per touched period (plus a few per period created on first use). Must run inside the ingest
    transaction.
    """
    by_organization: dict[int, list[UsageRecord]] = defaultdict(list)
    for row in rows:
        by_organization[row.organization_id].append(row)
    now = timezone.now()
    for organization_id, organization_rows in by_organization.items():
        _settle_organization(organization_id, organization_rows, now)


def reservations_close(*, reservation_ids: Iterable[uuid.UUID], status: str, now: datetime | None = None) -> list:
    """Close the still-held reservations among ``reservation_ids`` with ``status`` (``released``,
    ``expired`` or ``settled``) and take their holds off the periods' ``reserved_nanos``.

    Returns the ids actually closed; ids already closed (or unknown) are ignored, so closing twice
    or racing another closer has no effect. Callers own the transaction (run it inside one) and
    check tenancy before passing ids.
    """
    ids = sorted(reservation_ids)
    if not ids:
        return []
    now = now or timezone.now()
    pk = Reservation._meta.pk
    closed = _flip(f"id IN {in_list(ids)}", [pk.get_db_prep_value(i, connection) for i in ids], status, now)
    _apply(_holds_by_period(closed), {}, now)
    return closed


# --- steps ------------------------------------------------------------------------------------


def _settle_organization(organization_id: int, rows: list[UsageRecord], now: datetime) -> None:
    # Reservations held in PostgreSQL (the PostgreSQL store's, or made before a switch to Redis).
    reserved = _holds_by_period(_settle_reservations(organization_id, rows, now))
    budgets = _active_budgets(rows[0].organization)
    spent: dict[int, int] = {}
    budget_of: dict[int, Budget] = {}
    if budgets:
        spent, budget_of = _spend_by_period(budgets, rows)
    live = redis_store.enabled()
    pending = _live_pending(organization_id, spent, now) if live else ""
    copies = _apply(reserved, spent, now, budget_of=budget_of)
    if live:
        transaction.on_commit(lambda: _live_settle(organization_id, rows, copies, pending, now), robust=True)


def _live_pending(organization_id: int, spent: dict[int, int], now: datetime) -> str:
    """The Redis store: count this batch's spend as reserved until the ledger commits (so no check
    sees it in neither place). Redis unreachable: the ledger is written all the same, and the
    organization's check context version is bumped in this transaction, so every process's next
    check reads its periods from PostgreSQL and copies their spend into the store before reserving
    (until Redis is back, checks fail closed or open per SPENDGUARD_BUDGET_STORE_FAILURE)."""
    if not spent:
        return ""
    token = uuid.uuid4().hex
    deadline = now + timedelta(seconds=settings.SPENDGUARD_BUDGET_REDIS_PENDING_SECONDS)
    try:
        redis_store.pending_add(token=token, spend=spent, deadline=deadline)
    except RedisError as exc:
        logger.warning("Redis budget store unreachable while settling (%s); organization %s", exc, organization_id)
        check_context_version_bump(organization_id)
        return ""
    return token


def _live_settle(organization_id: int, rows: list[UsageRecord], copies, pending: str, now: datetime) -> None:
    """After the ledger commit: close the rows' reservations, copy the new spend and drop the
    pending batch, in one Redis script. If Redis fails here the reservations stay held until they
    expire and the pending batch until the expiry job drops it — both count too much, never too
    little — and that job copies the spend again."""
    try:
        redis_store.close(
            status=ReservationStatus.SETTLED.value,
            now=now,
            organization_id=organization_id,
            reservation_ids=sorted({row.reservation_id for row in rows if row.reservation_id is not None}),
            request_ids=sorted({row.request_id for row in rows if row.reservation_id is None and row.request_id}),
            copies=copies,
            pending_token=pending,
        )
    except RedisError as exc:
        logger.warning("Redis budget store unreachable after settling (%s); organization %s", exc, organization_id)


def check_context_version_bump(organization_id: int) -> None:
    """Make every process read this organization's check context afresh at its next check."""
    table = connection.ops.quote_name(CheckContextVersion._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (organization_id, version) VALUES (%s, 1) "
            f"ON CONFLICT (organization_id) DO UPDATE SET version = {table}.version + 1",
            [organization_id],
        )


def _active_budgets(organization: Organization) -> list[Budget]:
    """:func:`budgets.services.periods.active_budgets` for the ingest path: plain SQL (compiling
    the ORM query cost more than running it), the related objects period computation needs loaded
    only for sprint-period budgets (one more query, only when there are some)."""
    budgets = fetch_instances(Budget, None, "organization_id = %s AND is_active = %s", [organization.id, True])
    for budget in budgets:
        budget.organization = organization
    sprint_kind = {budget.id: budget for budget in budgets if budget.period == PeriodKind.SPRINT}
    if sprint_kind:
        for loaded in Budget.objects.filter(id__in=sprint_kind).select_related("sprint", "agent"):
            budget = sprint_kind[loaded.id]
            if loaded.sprint_id:
                budget.sprint = loaded.sprint
            if loaded.agent_id:
                budget.agent = loaded.agent
    return budgets


def _settle_reservations(organization_id: int, rows: list[UsageRecord], now: datetime) -> list:
    """Flip the rows' held reservations to ``settled`` (one query); return the flipped ids."""
    pk = Reservation._meta.pk
    by_id = sorted({row.reservation_id for row in rows if row.reservation_id is not None})
    # A row that names its reservation settles only that one; the request id is the fallback.
    by_request = sorted({row.request_id for row in rows if row.reservation_id is None})
    matches, params = [], []
    if by_id:
        matches.append(f"id IN {in_list(by_id)}")
        params += [pk.get_db_prep_value(i, connection) for i in by_id]
    if by_request:
        matches.append(f"request_id IN {in_list(by_request)}")
        params += by_request
    return _flip(
        f"organization_id = %s AND ({' OR '.join(matches)})",
        [organization_id, *params],
        ReservationStatus.SETTLED.value,
        now,
    )


def _flip(where: str, params: list, status: str, now: datetime) -> list:
    """The guarded status flip: ``held`` -> ``status`` for the matching rows; returns their ids."""
    if status not in ReservationStatus.values or status == ReservationStatus.HELD:
        raise ValueError(f"Cannot close a reservation as {status!r}.")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_RESERVATION_TABLE} SET status = %s, closed_at = %s WHERE status = %s AND {where} RETURNING id",
            [status, connection.ops.adapt_datetimefield_value(now), ReservationStatus.HELD.value, *params],
        )
        # PostgreSQL answers UUIDs, SQLite their hex strings.
        return [value if isinstance(value, uuid.UUID) else uuid.UUID(value) for (value,) in cursor.fetchall()]


def _holds_by_period(reservation_ids: list) -> dict[int, int]:
    """``{period_id: nano-dollars}`` held by these reservations (one query)."""
    if not reservation_ids:
        return {}
    pk = Reservation._meta.pk
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT period_id, SUM(amount_nanos) FROM {_HOLD_TABLE} "
            f"WHERE reservation_id IN {in_list(reservation_ids)} GROUP BY period_id",
            [pk.get_db_prep_value(i, connection) for i in reservation_ids],
        )
        return {period_id: int(total) for period_id, total in cursor.fetchall()}


def _spend_by_period(budgets: list[Budget], rows: list[UsageRecord]) -> tuple[dict[int, int], dict[int, Budget]]:
    """``{period_id: nano-dollars}`` to add to ``spent_nanos`` (periods created on first use), and
    ``{period_id: budget}`` for those periods."""
    priced = [(row, usd_to_nanos(row.cost_usd)) for row in rows if row.cost_usd is not None]
    priced = [(row, nanos) for row, nanos in priced if nanos]
    if not priced:
        return {}, {}
    sprints = sprints_for_budgets(budgets)
    # (budget id, period start) -> [budget, bounds, nano-dollars]
    wanted: dict[tuple[int, datetime], list] = {}
    for budget in budgets:
        known: list[Bounds] = []  # this budget's periods met so far: rows of a batch mostly share one
        for row, nanos in priced:
            if not covers(
                budget, project_id=row.project_id, sprint_id=row.sprint_id, agent_id=row.agent_id, model=row.model
            ):
                continue
            at = row.occurred_at
            bounds = next((b for b in known if b.contains(at)), None)
            if bounds is None:
                bounds = period_bounds(budget, at, sprints=sprints)
                if bounds is None:  # outside a custom range, or no sprint running then
                    continue
                known.append(bounds)
            key = (budget.id, bounds.starts_at)
            entry = wanted.get(key)
            if entry is None:
                wanted[key] = [budget, bounds, nanos]
            else:
                entry[2] += nanos
    if not wanted:
        return {}, {}

    budget_ids = sorted({budget_id for budget_id, _ in wanted})
    starts = sorted({starts_at for _, starts_at in wanted})
    found = fetch_instances(
        BudgetPeriod,
        ("id", "budget_id", "starts_at"),
        f"budget_id IN {in_list(budget_ids)} AND starts_at IN {in_list(starts)}",
        [*budget_ids, *(connection.ops.adapt_datetimefield_value(start) for start in starts)],
    )
    existing = {(period.budget_id, period.starts_at): period.id for period in found}
    spent: dict[int, int] = defaultdict(int)
    budget_of: dict[int, Budget] = {}
    # Create missing periods in one global order so concurrent batches cannot deadlock on them.
    for key in sorted(wanted):
        budget, bounds, nanos = wanted[key]
        period_id = existing.get(key)
        if period_id is None:
            period, created = period_ensure(budget, bounds)
            if created:
                # Initialised from the ledger, which already includes these rows (period_ensure
                # also sent the thresholds that spend crossed).
                continue
            period_id = period.id
        spent[period_id] += nanos
        budget_of[period_id] = budget
    return spent, budget_of


def sprints_for_budgets(budgets: list[Budget]) -> list[Sprint] | None:
    """Candidate sprints of project/agent budgets with a sprint period (one query, or none)."""
    project_ids = {
        budget.project_id or budget.agent.project_id
        for budget in budgets
        if budget.period == PeriodKind.SPRINT and not budget.sprint_id
    }
    if not project_ids:
        return None
    return list(Sprint.objects.filter(project_id__in=project_ids))


def _apply(
    reserved: dict[int, int], spent: dict[int, int], now: datetime, *, budget_of: dict[int, Budget] | None = None
) -> list[tuple[int, int, int]]:
    """One UPDATE per touched period, in ascending id (the lock order every writer follows).
    Returns ``(period id, spent, spent version)`` of the periods whose spend it changed (what the
    Redis store copies after the commit).

    Where spend is added, the UPDATE returns the period as it left it, and the thresholds that this
    one addition carried ``spent_nanos`` across are sent (``budget_threshold_crossed``): the row lock
    serialises concurrent additions, so each (before, after) pair is seen by exactly one of them.
    """
    updated_at = connection.ops.adapt_datetimefield_value(now)
    returned = row_shape(BudgetPeriod, _RETURNED_FIELDS)
    crossings: list[tuple[Budget, BudgetPeriod, int]] = []
    copies: list[tuple[int, int, int]] = []
    with connection.cursor() as cursor:
        for period_id in sorted(reserved.keys() | spent.keys()):
            release, add = reserved.get(period_id, 0), spent.get(period_id, 0)
            if not release and not add:
                continue
            # Clamped at zero rather than failing the ledger write if the counter drifted below its
            # holds; the reconciliation job reports and repairs such drift.
            cursor.execute(
                f"UPDATE {_PERIOD_TABLE} SET spent_nanos = spent_nanos + %s, "
                f"reserved_nanos = CASE WHEN reserved_nanos > %s THEN reserved_nanos - %s ELSE 0 END, "
                f"updated_at = %s WHERE id = %s RETURNING {returned.select()}",
                [add, release, release, updated_at, period_id],
            )
            row = cursor.fetchone()
            if row is None:
                continue
            period = returned.instance(row)
            if add:
                copies.append((period.id, period.spent_nanos, period.spent_version))
            budget = (budget_of or {}).get(period_id)
            if add and budget is not None:
                crossings.append((budget, period, period.spent_nanos - add))
    # After every counter update, so receivers' writes (alerts, an agent paused) take their locks
    # after the periods', in the order every writer follows.
    for budget, period, before in crossings:
        thresholds_cross(budget=budget, period=period, before_nanos=before)
    return copies


# What a counter update returns for threshold detection (a BudgetPeriod instance, no extra query).
_RETURNED_FIELDS = (
    "id", "budget_id", "starts_at", "ends_at", "limit_nanos", "ceiling_nanos", "spent_nanos", "spent_version",
)  # fmt: skip
