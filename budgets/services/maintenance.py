"""Periodic upkeep of the live budget counters: expire stale reservations, reconcile with the ledger.

Both jobs are safe to run twice, late or concurrently (DESIGN.md flow 4): the expiry picker skips
rows another run has locked and closes reservations with the guarded flip of
:func:`budgets.services.settlement.reservations_close`; reconciliation locks one period row at a
time while it recomputes it, so a settlement or reservation touching that row waits for it (and
never the other way round) and no concurrent update is lost.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from budgets.models import BudgetPeriod, Reservation, ReservationHold, ReservationStatus, nanos_usd_text
from budgets.services import redis_store
from budgets.services.periods import Bounds, ledger_spend_nanos
from budgets.services.settlement import reservations_close, sprints_for_budgets

logger = logging.getLogger(__name__)

# Reservations closed per transaction by the expiry job (bounds lock time and memory).
EXPIRE_BATCH_SIZE = 500
# Periods that are not current are still reconciled this long after their counters last changed
# (late usage settles into past periods).
RECONCILE_LOOKBACK = timedelta(days=2)

_PERIOD_TABLE = BudgetPeriod._meta.db_table


def reservations_expire(*, now: datetime | None = None, batch_size: int = EXPIRE_BATCH_SIZE) -> int:
    """Close every reservation still held past its ``expires_at`` (as of ``now``) as ``expired``,
    returning its holds to the budgets. Returns how many this run closed.

    Concurrent runs split the work: each picks due rows with ``FOR UPDATE SKIP LOCKED``, and the
    guarded flip ignores any a settlement or release closed first, so a reservation is released
    exactly once.
    """
    now = now or timezone.now()
    total = 0
    while True:
        with transaction.atomic():
            due = list(
                Reservation.objects.select_for_update(skip_locked=True)
                .filter(status=ReservationStatus.HELD, expires_at__lte=now)
                .order_by("expires_at", "id")
                .values_list("id", flat=True)[:batch_size]
            )
            closed = reservations_close(reservation_ids=due, status=ReservationStatus.EXPIRED, now=now)
        total += len(closed)
        if len(due) < batch_size or not closed:
            break
    if redis_store.enabled():
        total += _live_expire(now=now, batch_size=batch_size)
    if total:
        logger.info("Expired %d reservation(s) held past their TTL.", total)
    return total


def _live_expire(*, now: datetime, batch_size: int) -> int:
    """The Redis store: expire its held reservations past their deadline, and drop the pending
    batches of settlements that never finished (rolled back, or their process died after the
    commit), copying their periods' spend from PostgreSQL in the same step — so the store goes from
    counting such spend as reserved to counting it as spent (or not at all if it rolled back)."""
    total = 0
    while True:
        due = redis_store.due_reservations(now=now, limit=batch_size)
        closed = redis_store.close(status=ReservationStatus.EXPIRED.value, now=now, reservation_ids=due)
        total += len(closed)
        if len(due) < batch_size:
            break
    for token, period_ids in redis_store.due_pending(now=now, limit=batch_size).items():
        logger.warning("Dropping unfinished settlement %s on periods %s; copying their spend.", token, period_ids)
        redis_store.close(
            status=ReservationStatus.SETTLED.value, now=now, copies=_spend_copies(period_ids), pending_token=token
        )
    return total


def _spend_copies(period_ids: list[int]) -> list[tuple[int, int, int]]:
    """(period id, spent, spent version) as committed in PostgreSQL."""
    if not period_ids:
        return []
    return list(BudgetPeriod.objects.filter(id__in=period_ids).values_list("id", "spent_nanos", "spent_version"))


@dataclass(frozen=True, slots=True)
class PeriodDrift:
    """A live period whose counters disagreed with the ledger / the held reservations (nano-USD)."""

    period_id: int
    budget_id: int
    spent_nanos: int  # the counter as found
    ledger_nanos: int  # what the ledger says was spent
    reserved_nanos: int  # the counter as found
    held_nanos: int  # what the held reservations' holds add up to

    @property
    def spent_drift_nanos(self) -> int:
        return self.spent_nanos - self.ledger_nanos

    @property
    def reserved_drift_nanos(self) -> int:
        return self.reserved_nanos - self.held_nanos

    def describe(self) -> str:
        return (
            f"period {self.period_id} (budget {self.budget_id}): "
            f"spent {nanos_usd_text(self.spent_nanos)} vs ledger {nanos_usd_text(self.ledger_nanos)} "
            f"(drift {nanos_usd_text(self.spent_drift_nanos)}), "
            f"reserved {nanos_usd_text(self.reserved_nanos)} vs held {nanos_usd_text(self.held_nanos)} "
            f"(drift {nanos_usd_text(self.reserved_drift_nanos)}) USD"
        )


@dataclass(slots=True)
class ReconcileReport:
    """What one reconciliation run found: periods checked, those that drifted, whether repaired."""

    checked: int = 0
    drifts: list[PeriodDrift] = field(default_factory=list)
    repaired: bool = False

    def lines(self) -> list[str]:
        verb = "repaired" if self.repaired else "found (not repaired)"
        head = f"Checked {self.checked} budget period(s); drift {verb} in {len(self.drifts)}."
        return [head, *(f"  {drift.describe()}" for drift in self.drifts)]


def budget_spend_reconcile(
    *, now: datetime | None = None, repair: bool = True, lookback: timedelta = RECONCILE_LOOKBACK
) -> ReconcileReport:
    """Recompute the live counters of active budgets' periods from the source of truth and report
    (and, with ``repair``, fix) any drift.

    Periods checked: those current at ``now``, those whose counters changed within ``lookback``,
    and any still showing money reserved. For each, in its own short transaction with the period
    row locked ``FOR UPDATE``: ``spent_nanos`` should equal the ledger (``ledger_spend_nanos``) and
    ``reserved_nanos`` the holds of its still-held reservations. Repairs add the difference
    (``spent_nanos = spent_nanos + delta``, guarded by the values read), so a settlement queued on
    the lock applies on top of the repaired value instead of being overwritten.
    """
    now = now or timezone.now()
    current = Q(starts_at__lte=now) & (Q(ends_at__isnull=True) | Q(ends_at__gt=now))
    candidates = list(
        BudgetPeriod.objects.filter(budget__is_active=True)
        .filter(current | Q(updated_at__gte=now - lookback) | ~Q(reserved_nanos=0))
        .select_related("budget")
        .order_by("id")
    )
    report = ReconcileReport(repaired=repair)
    drifts = []
    for period in candidates:
        drift = _period_reconcile(period, now=now, repair=repair)
        if drift is not None:
            drifts.append(drift)
    if redis_store.enabled():
        drifts = _live_reconcile(drifts, repair=repair)
    for drift in drifts:
        report.checked += 1
        if drift.spent_drift_nanos or drift.reserved_drift_nanos:
            report.drifts.append(drift)
            logger.warning("Budget counter drift %s: %s", "repaired" if repair else "found", drift.describe())
    logger.info(report.lines()[0])
    return report


def _live_reconcile(drifts: list[PeriodDrift], *, repair: bool) -> list[PeriodDrift]:
    """The Redis store: its spend copy should equal the period row's (after the ledger repair just
    made) and its reserved amount what its held reservations and pending settlements add up to.
    Repairing copies the spend (newer versions only) and recounts the reserved amount atomically in
    Redis, so checks running meanwhile are neither lost nor counted twice."""
    ids = [drift.period_id for drift in drifts]
    before = redis_store.counters(ids)
    copies = _spend_copies(ids)
    if repair:
        redis_store.spend_copy(copies)
    recount = redis_store.reserved_recount(ids, repair=repair)
    committed = {period_id: spent for period_id, spent, _ in copies}
    result = []
    for drift in drifts:
        spent_copy = before[drift.period_id][0]
        found_reserved, held = recount[drift.period_id]
        live_drift = PeriodDrift(
            drift.period_id,
            drift.budget_id,
            # A drift of the period row from the ledger, else of the store's copy from the row.
            drift.spent_nanos if drift.spent_drift_nanos or spent_copy is None else spent_copy,
            drift.ledger_nanos if drift.spent_drift_nanos or spent_copy is None else committed[drift.period_id],
            found_reserved,
            held,
        )
        result.append(live_drift)
    return result


def _period_reconcile(period: BudgetPeriod, *, now: datetime, repair: bool) -> PeriodDrift | None:
    """Check (and repair) one period under its row lock; None if it vanished meanwhile."""
    with transaction.atomic():
        found = (
            BudgetPeriod.objects.select_for_update()
            .filter(id=period.id)
            .values_list("spent_nanos", "reserved_nanos")
            .first()
        )
        if found is None:
            return None
        spent, reserved = found
        # Read after taking the lock: a writer that updated the row before us has committed, so its
        # ledger rows and holds are visible; one that has not updated it yet waits for us.
        ledger = ledger_spend_nanos(period.budget, Bounds(period.starts_at, period.ends_at))
        held = (
            ReservationHold.objects.filter(period_id=period.id, reservation__status=ReservationStatus.HELD).aggregate(
                total=Sum("amount_nanos")
            )["total"]
            or 0
        )
        drift = PeriodDrift(period.id, period.budget_id, spent, ledger, reserved, held)
        if repair and (ledger != spent or held != reserved):
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {_PERIOD_TABLE} SET spent_nanos = spent_nanos + %s, "
                    f"reserved_nanos = reserved_nanos + %s, updated_at = %s "
                    f"WHERE id = %s AND spent_nanos = %s AND reserved_nanos = %s",
                    [
                        ledger - spent,
                        held - reserved,
                        connection.ops.adapt_datetimefield_value(now),
                        period.id,
                        spent,
                        reserved,
                    ],
                )
    return drift


# Longer than the job's cadence (every minute), so a period's row exists before the period starts.
PERIOD_LEAD = timedelta(minutes=2)


def current_periods_start(*, now: datetime | None = None) -> int:
    """Start the live period row of every active budget whose current period — or next one, when it
    starts within ``PERIOD_LEAD`` — has none yet (a new day, week, sprint ... that no check or usage
    has touched), from the ledger; returns how many.

    Reads (budget lists, reports) show a budget without a live row by summing the ledger, which is
    exact but costs a scan of the period's rows; this keeps such budgets rare. Safe to run twice or
    concurrently: ``period_ensure`` races on the (budget, starts_at) constraint. Thresholds the
    period's existing spend already crossed alert here, once (as at a first check).
    """
    from budgets.selectors import budget_queryset
    from budgets.services.periods import period_bounds, period_ensure

    now = now or timezone.now()
    budgets = list(budget_queryset().filter(is_active=True))
    sprints = sprints_for_budgets(budgets)  # one query for every sprint-period budget, not one each
    wanted = {}
    for budget in budgets:
        # The period running now, and the one starting within PERIOD_LEAD: started ahead (with
        # nothing spent in it yet), so at midnight, on Monday ... reads find its live row at once
        # instead of summing the ledger until the next run.
        for at in (now, now + PERIOD_LEAD):
            bounds = period_bounds(budget, at, sprints=sprints)
            if bounds is not None:
                wanted[(budget.pk, bounds.starts_at)] = (budget, bounds)
    if not wanted:
        return 0
    existing = set(
        BudgetPeriod.objects.filter(
            budget__in={pk for pk, _ in wanted}, starts_at__in={s for _, s in wanted}
        ).values_list("budget_id", "starts_at")
    )
    started = 0
    for key in sorted(wanted.keys() - existing):
        budget, bounds = wanted[key]
        with transaction.atomic():
            started += period_ensure(budget, bounds)[1]
    return started
