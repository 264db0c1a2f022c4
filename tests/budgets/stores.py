"""Both spend stores under the same tests: the ``store`` fixture runs a test once on the PostgreSQL
store (ADR 0003) and once on the Redis store (ADR 0008), and the helpers read the live state from
whichever enforces — so a test states the contract once and both stores must keep it."""

import uuid

import pytest

from budgets.models import BudgetPeriod, Reservation, ReservationHold
from budgets.selectors import live_reserved_apply
from budgets.services import redis_store

STORES = [
    "postgresql",
    pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.postgres]),
]


def use_redis_store(settings) -> None:
    """Switch to the Redis store on this machine's Redis, under a prefix of the test's own."""
    settings.SPENDGUARD_BUDGET_STORE = "redis"
    settings.SPENDGUARD_BUDGET_REDIS_URL = settings.CACHES["default"]["LOCATION"]
    settings.SPENDGUARD_BUDGET_REDIS_PREFIX = f"test-{uuid.uuid4().hex[:12]}:budgets:"


@pytest.fixture(params=STORES)
def store(request, settings):
    if request.param == "redis":
        use_redis_store(settings)
        yield "redis"
        redis_store.flush()
    else:
        yield "postgresql"


def periods() -> list[BudgetPeriod]:
    """Every period row in id order, with what the enforcing store has reserved on it."""
    rows = list(BudgetPeriod.objects.order_by("pk"))
    live_reserved_apply(rows)
    return rows


def period_counters() -> list[tuple[int, int, int]]:
    """(budget id, reserved, spent) of every period, sorted; on Redis its spend copy, once loaded,
    must equal the row's."""
    rows = periods()
    if redis_store.enabled():
        live = redis_store.counters([p.pk for p in rows])
        for period in rows:
            copy = live[period.pk][0]
            assert copy is None or copy == period.spent_nanos, (period.pk, copy, period.spent_nanos)
    return sorted((p.budget_id, p.reserved_nanos, p.spent_nanos) for p in rows)


def reservations() -> list[Reservation]:
    """Every reservation the enforcing store knows (PostgreSQL's rows, or Redis's as unsaved rows),
    oldest first; ``period_ids`` lists the periods each holds against."""
    if not redis_store.enabled():
        found = list(Reservation.objects.order_by("created_at", "id"))
        for reservation in found:
            reservation.period_ids = sorted(
                ReservationHold.objects.filter(reservation=reservation).values_list("period_id", flat=True)
            )
        return found
    prefix = f"{redis_store._prefix()}res:"
    held = [
        redis_store.reservation_get(uuid.UUID(key.removeprefix(prefix)))
        for key in redis_store.client().scan_iter(match=f"{prefix}*")
    ]
    result = []
    for entry in sorted(held, key=lambda h: (h.created_at, str(h.id))):
        reservation = entry.as_reservation()
        reservation.period_ids = entry.period_ids
        result.append(reservation)
    assert not Reservation.objects.exists()  # the Redis store writes none to PostgreSQL
    return result


def holds() -> list[tuple[int, int]]:
    """(budget id, amount) of every hold of every reservation, sorted."""
    budget_of = dict(BudgetPeriod.objects.values_list("pk", "budget_id"))
    return sorted((budget_of[pid], r.amount_nanos) for r in reservations() for pid in r.period_ids)


def used_nanos(period_id: int) -> int:
    """``spent + reserved`` of a period as the enforcing store sees it (one read)."""
    if redis_store.enabled():
        spent, reserved = redis_store.counters([period_id])[period_id]
        return (spent or 0) + reserved
    return sum(BudgetPeriod.objects.values_list("spent_nanos", "reserved_nanos").get(pk=period_id))


def reservations_forget() -> None:
    """Delete every reservation record (closed ones included) of the enforcing store."""
    Reservation.objects.all().delete()
    if redis_store.enabled():
        redis_client = redis_store.client()
        for pattern in ("res:*", "rq:*"):
            for key in redis_client.scan_iter(match=f"{redis_store._prefix()}{pattern}"):
                redis_client.delete(key)
