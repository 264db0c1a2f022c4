"""Reservation expiry and reconciliation of live budget counters with the ledger.

Races are staged with real threads on PostgreSQL; where an interleaving matters, the test waits
until the second transaction is really blocked on a row lock (``pg_stat_activity``) before letting
the first one go on.
"""

import datetime as dt
import importlib
import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from budgets import tasks
from budgets.models import BudgetPeriod, Reservation, ReservationStatus
from budgets.services import maintenance
from budgets.services.maintenance import PeriodDrift, budget_spend_reconcile, reservations_expire
from budgets.services.settlement import reservations_close, usage_settle
from config.beat import BEAT_SCHEDULE
from costs.services import ingest as ingest_module
from costs.services.api_keys import api_key_create
from costs.services.ingest import usage_ingest
from tests.budgets.conftest import ledger_row
from tests.budgets.test_settlement import (
    AT,
    DAY,
    LARGE,
    NOW,
    SMALL,
    counters,
    hold,
    ledger,
    make_budget,
    run_together,
)
from tests.costs.test_ingest import make_price, usage

pytestmark = pytest.mark.django_db

PAST = AT - dt.timedelta(minutes=1)  # an expiry already passed at NOW
LATER = NOW + dt.timedelta(hours=1)  # an expiry still ahead at NOW


@pytest.fixture
def gpt4o(db):
    return make_price("gpt-4o", input="2.5", output="10")


@pytest.fixture
def api_key(organization, project):
    key, _ = api_key_create(organization=organization, project=project, name="maint")
    return key


def bump(period_id: int, *, spent: int = 0, reserved: int = 0) -> None:
    """Inject drift behind the services' back."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE budgets_budgetperiod SET spent_nanos = spent_nanos + %s, reserved_nanos = reserved_nanos + %s "
            "WHERE id = %s",
            [spent, reserved, period_id],
        )


def wait_for_lock_waiters(count: int = 1, timeout: float = 20) -> None:
    """Block until ``count`` other sessions of this database wait on a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] >= count:
                return
        time.sleep(0.01)
    raise AssertionError("no session ended up waiting on a lock")


def start(target, name: str | None = None) -> tuple[threading.Thread, list]:
    """Run ``target`` in a thread with its own connection; returns (thread, [result or exception])."""
    out: list = []

    def work() -> None:
        try:
            out.append(target())
        except BaseException as exc:
            out.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=work, name=name)
    thread.start()
    return thread, out


def result(thread: threading.Thread, out: list):
    thread.join(timeout=60)
    assert not thread.is_alive()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


# --- expiry -------------------------------------------------------------------------------------


def test_expiry_releases_due_reservations_once(organization, agent):
    agent_budget = make_budget(organization, "agent", agent=agent)
    org_budget = make_budget(organization, "org")
    due = [hold(agent=agent, budgets=[agent_budget, org_budget], amount_usd="0.01", expires_at=PAST) for _ in range(3)]
    on_time = hold(agent=agent, budgets=[agent_budget, org_budget], amount_usd="0.002", expires_at=LATER)
    settled = hold(agent=agent, budgets=[agent_budget], amount_usd="0.004", expires_at=PAST)
    reservations_close(reservation_ids=[settled.id], status=ReservationStatus.SETTLED)
    assert counters(agent_budget) == [(DAY, 0, 32_000_000)]

    assert reservations_expire(now=NOW) == 3

    assert counters(agent_budget) == [(DAY, 0, 2_000_000)]
    assert counters(org_budget) == [(DAY, 0, 2_000_000)]
    statuses = dict(Reservation.objects.values_list("id", "status"))
    assert statuses == {
        **{r.id: ReservationStatus.EXPIRED for r in due},
        on_time.id: ReservationStatus.HELD,
        settled.id: ReservationStatus.SETTLED,
    }
    assert all(r.closed_at == NOW for r in Reservation.objects.filter(status=ReservationStatus.EXPIRED))

    # Running again (late, or twice) changes nothing.
    assert reservations_expire(now=NOW) == 0
    assert counters(agent_budget) == [(DAY, 0, 2_000_000)]


def test_expiry_works_through_more_than_one_batch(organization, agent):
    budget = make_budget(organization, "agent", agent=agent)
    for _ in range(5):
        hold(agent=agent, budgets=[budget], amount_usd="0.001", expires_at=PAST)

    assert reservations_expire(now=NOW, batch_size=2) == 5

    assert counters(budget) == [(DAY, 0, 0)]
    assert not Reservation.objects.filter(status=ReservationStatus.HELD).exists()


def test_closing_twice_has_no_effect(organization, agent):
    budget = make_budget(organization, "agent", agent=agent)
    reservation = hold(agent=agent, budgets=[budget], amount_usd="0.01")
    hold(agent=agent, budgets=[budget], amount_usd="0.002")

    assert reservations_close(reservation_ids=[reservation.id], status=ReservationStatus.RELEASED) == [reservation.id]
    assert reservations_close(reservation_ids=[reservation.id], status=ReservationStatus.RELEASED) == []
    assert reservations_close(reservation_ids=[reservation.id], status=ReservationStatus.EXPIRED) == []

    assert counters(budget) == [(DAY, 0, 2_000_000)]
    assert Reservation.objects.get(pk=reservation.pk).status == ReservationStatus.RELEASED


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_expiry_runs_release_each_reservation_exactly_once(organization, agent):
    budgets = [make_budget(organization, "agent", agent=agent), make_budget(organization, "org")]
    for _ in range(60):
        hold(agent=agent, budgets=budgets, amount_usd="0.001", expires_at=PAST)
    hold(agent=agent, budgets=budgets, amount_usd="0.002", expires_at=LATER)

    counts = run_together([lambda: reservations_expire(now=NOW, batch_size=7) for _ in range(4)])

    assert sum(counts) == 60
    for budget in budgets:
        assert counters(budget) == [(DAY, 0, 2_000_000)]
    assert Reservation.objects.filter(status=ReservationStatus.EXPIRED).count() == 60


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_expiry_run_skips_what_a_concurrent_run_is_releasing(organization, agent, monkeypatch):
    budget = make_budget(organization, "agent", agent=agent)
    for _ in range(3):
        hold(agent=agent, budgets=[budget], amount_usd="0.001", expires_at=PAST)
    picked, go = threading.Event(), threading.Event()
    original = maintenance.reservations_close

    def slow_close(**kwargs):
        if threading.current_thread().name == "first":
            picked.set()  # the due rows are locked by now
            assert go.wait(timeout=30)
        return original(**kwargs)

    monkeypatch.setattr(maintenance, "reservations_close", slow_close)
    first, first_out = start(lambda: reservations_expire(now=NOW), name="first")
    assert picked.wait(timeout=30)

    second, second_out = start(lambda: reservations_expire(now=NOW))
    assert result(second, second_out) == 0  # nothing left to pick: skipped, not waited for
    go.set()

    assert result(first, first_out) == 3
    assert counters(budget) == [(DAY, 0, 0)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_usage_settling_a_reservation_being_expired_books_the_hold_off_once(
    organization, project, agent, api_key, gpt4o, monkeypatch
):
    budget = make_budget(organization, "agent", agent=agent)
    reservation = hold(agent=agent, budgets=[budget], amount_usd="0.01", expires_at=PAST)
    hold(agent=agent, budgets=[budget], amount_usd="0.002", expires_at=LATER)
    picked, go = threading.Event(), threading.Event()
    original = maintenance.reservations_close

    def slow_close(**kwargs):
        picked.set()
        assert go.wait(timeout=30)
        return original(**kwargs)

    monkeypatch.setattr(maintenance, "reservations_close", slow_close)
    expiry, expiry_out = start(lambda: reservations_expire(now=NOW))
    assert picked.wait(timeout=30)
    settle, settle_out = start(
        lambda: usage_ingest(
            api_key=api_key,
            records=[usage(agent="planner", reservation_id=str(reservation.id))],
            now=NOW,
        )
    )
    wait_for_lock_waiters()  # the settlement's flip waits for the expiry's row lock
    go.set()

    assert result(expiry, expiry_out) == 1
    assert len(result(settle, settle_out)) == 1
    assert counters(budget) == [(DAY, SMALL, 2_000_000)]
    assert Reservation.objects.get(pk=reservation.pk).status == ReservationStatus.EXPIRED


# --- reconciliation ---------------------------------------------------------------------------


def test_reconciliation_reports_zero_drift_on_a_clean_state(organization, project, agent, api_key, gpt4o):
    budgets = [make_budget(organization, "agent", agent=agent), make_budget(organization, "org", period="monthly")]
    usage_ingest(api_key=api_key, records=[usage(request_id=f"r{i}", agent="planner") for i in range(3)], now=NOW)
    hold(agent=agent, budgets=budgets, amount_usd="0.01")
    before = [counters(b) for b in budgets]

    report = budget_spend_reconcile(now=NOW)

    assert (report.checked, report.drifts, report.repaired) == (2, [], True)
    assert [counters(b) for b in budgets] == before
    assert report.lines() == ["Checked 2 budget period(s); drift repaired in 0."]


def test_reconciliation_detects_and_repairs_injected_drift(organization, project, agent, api_key, gpt4o):
    agent_budget = make_budget(organization, "agent", agent=agent)
    org_budget = make_budget(organization, "org")
    usage_ingest(api_key=api_key, records=[usage(agent="planner", prompt_tokens=1000, completion_tokens=100)], now=NOW)
    hold(agent=agent, budgets=[agent_budget], amount_usd="0.01")
    settled = hold(agent=agent, budgets=[agent_budget], amount_usd="0.5")
    Reservation.objects.filter(pk=settled.pk).update(status=ReservationStatus.SETTLED)  # its hold "leaked"
    agent_period = agent_budget.periods.get()
    bump(agent_period.id, spent=-123)
    org_period = org_budget.periods.get()
    bump(org_period.id, spent=7_000_000_000)

    dry = budget_spend_reconcile(now=NOW, repair=False)

    expected = [
        PeriodDrift(agent_period.id, agent_budget.id, LARGE - 123, LARGE, 510_000_000, 10_000_000),
        PeriodDrift(org_period.id, org_budget.id, LARGE + 7_000_000_000, LARGE, 0, 0),
    ]
    assert (dry.checked, dry.drifts, dry.repaired) == (2, expected, False)
    assert counters(agent_budget) == [(DAY, LARGE - 123, 510_000_000)]  # untouched
    assert dry.lines()[0] == "Checked 2 budget period(s); drift found (not repaired) in 2."
    assert dry.lines()[1] == (
        f"  period {agent_period.id} (budget {agent_budget.id}): spent 0.003499877 vs ledger 0.0035 "
        f"(drift -0.000000123), reserved 0.51 vs held 0.01 (drift 0.5) USD"
    )

    report = budget_spend_reconcile(now=NOW)

    assert (report.drifts, report.repaired) == (expected, True)
    assert counters(agent_budget) == [(DAY, LARGE, 10_000_000)]
    assert counters(org_budget) == [(DAY, LARGE, 0)]
    assert budget_spend_reconcile(now=NOW).drifts == []


def test_reconciliation_checks_current_recent_and_reserved_periods_of_active_budgets(
    organization, project, agent, api_key, gpt4o
):
    budget = make_budget(organization, "agent", agent=agent)
    inactive = make_budget(organization, "inactive", agent=agent, is_active=False)
    usage_ingest(api_key=api_key, records=[usage(agent="planner")], now=NOW)
    [period] = budget.periods.all()
    old_reserving = hold(agent=agent, budgets=[budget], at=AT - dt.timedelta(days=30))
    old_period = BudgetPeriod.objects.get(holds__reservation=old_reserving)
    stale = BudgetPeriod.objects.create(
        budget=budget,
        starts_at=DAY - dt.timedelta(days=60),
        ends_at=DAY - dt.timedelta(days=59),
        limit_nanos=1,
        ceiling_nanos=1,
        spent_nanos=5,
    )
    BudgetPeriod.objects.filter(pk=stale.pk).update(updated_at=NOW - dt.timedelta(days=10))
    inactive_period = BudgetPeriod.objects.create(
        budget=inactive, starts_at=DAY, ends_at=DAY + dt.timedelta(days=1), limit_nanos=1, ceiling_nanos=1
    )
    bump(period.id, spent=1)
    bump(old_period.id, spent=2)
    bump(inactive_period.id, spent=3)
    BudgetPeriod.objects.filter(pk__in=[old_period.pk, period.pk]).update(updated_at=NOW - dt.timedelta(days=10))

    report = budget_spend_reconcile(now=NOW)

    # The current period, and the old one because it still shows money reserved; not the stale
    # period outside the lookback, nor the inactive budget's.
    assert report.checked == 2
    assert [d.period_id for d in report.drifts] == sorted([period.id, old_period.id])
    assert BudgetPeriod.objects.get(pk=stale.pk).spent_nanos == 5
    assert BudgetPeriod.objects.get(pk=inactive_period.pk).spent_nanos == 3
    assert counters(budget)[-1][1:] == (SMALL, 0)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_reconciliation_does_not_clobber_a_settlement_that_arrives_while_it_sums(
    organization, project, agent, api_key, gpt4o, monkeypatch
):
    budget = make_budget(organization, "agent", agent=agent)
    usage_ingest(api_key=api_key, records=[usage(request_id="first", agent="planner")], now=NOW)
    [period] = budget.periods.all()
    bump(period.id, spent=1000)
    summed, go = threading.Event(), threading.Event()
    original = maintenance.ledger_spend_nanos

    def slow_sum(*args, **kwargs):
        total = original(*args, **kwargs)
        summed.set()
        assert go.wait(timeout=30)
        return total

    monkeypatch.setattr(maintenance, "ledger_spend_nanos", slow_sum)
    reconcile, reconcile_out = start(lambda: budget_spend_reconcile(now=NOW))
    assert summed.wait(timeout=30)
    settle, settle_out = start(
        lambda: usage_ingest(
            api_key=api_key, records=[usage(request_id="second", agent="planner", prompt_tokens=1000)], now=NOW
        )
    )
    wait_for_lock_waiters()  # the settlement's UPDATE waits for the reconciliation's row lock
    go.set()

    report = result(reconcile, reconcile_out)
    result(settle, settle_out)
    assert [(d.spent_nanos, d.ledger_nanos) for d in report.drifts] == [(SMALL + 1000, SMALL)]
    assert counters(budget) == [(DAY, SMALL + 2_600_000, 0)]
    assert ledger(budget) == SMALL + 2_600_000


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_reconciliation_waits_for_a_settlement_in_flight(organization, project, agent, api_key, gpt4o, monkeypatch):
    budget = make_budget(organization, "agent", agent=agent)
    usage_ingest(api_key=api_key, records=[usage(request_id="first", agent="planner")], now=NOW)
    settled, go = threading.Event(), threading.Event()

    def pause_after_settling(rows):
        settled.set()  # the period row is updated (and locked) but not committed
        assert go.wait(timeout=30)

    monkeypatch.setattr(ingest_module, "_rows_written_hooks", [usage_settle, pause_after_settling])
    settle, settle_out = start(
        lambda: usage_ingest(
            api_key=api_key, records=[usage(request_id="second", agent="planner", prompt_tokens=1000)], now=NOW
        )
    )
    assert settled.wait(timeout=30)
    reconcile, reconcile_out = start(lambda: budget_spend_reconcile(now=NOW))
    wait_for_lock_waiters()
    go.set()

    result(settle, settle_out)
    report = result(reconcile, reconcile_out)
    assert (report.checked, report.drifts) == (1, [])
    assert counters(budget) == [(DAY, SMALL + 2_600_000, 0)]


# --- tasks, schedule, command -----------------------------------------------------------------


def test_tasks_run_the_services(organization, agent):
    budget = make_budget(organization, "agent", agent=agent)
    hold(agent=agent, budgets=[budget], amount_usd="0.01", expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    bump(budget.periods.get().id, spent=5)

    assert tasks.expire_reservations.delay().get() == 1
    # The hold's period is current (or was just changed): its spend drift is found and repaired.
    outcome = tasks.reconcile_budget_spend.delay().get()
    assert outcome == {"checked": 1, "drifted": [budget.periods.get().id]}
    assert budget.periods.get().spent_nanos == 0
    assert tasks.expire_reservations.acks_late and tasks.reconcile_budget_spend.acks_late
    assert tasks.expire_reservations.time_limit and tasks.reconcile_budget_spend.time_limit


def test_beat_schedule_runs_expiry_every_minute_and_reconciliation_every_15_minutes(settings):
    assert settings.CELERY_BEAT_SCHEDULE is BEAT_SCHEDULE
    by_task = {entry["task"]: entry["schedule"] for entry in BEAT_SCHEDULE.values()}
    expire, reconcile = by_task["budgets.tasks.expire_reservations"], by_task["budgets.tasks.reconcile_budget_spend"]
    assert expire.minute == set(range(60)) and expire.hour == set(range(24))
    assert reconcile.minute == {0, 15, 30, 45} and reconcile.hour == set(range(24))
    for name in by_task:
        module, func = name.rsplit(".", 1)
        assert getattr(importlib.import_module(module), func).name == name


def test_reconcile_command_prints_the_report(organization, agent):
    budget = make_budget(organization, "agent", agent=agent)
    hold(agent=agent, budgets=[budget], amount_usd="0.01", at=dt.datetime.now(dt.UTC))
    period = budget.periods.get()
    bump(period.id, spent=250)

    out = StringIO()
    call_command("reconcile_budgets", "--dry-run", stdout=out)
    assert out.getvalue() == (
        "Checked 1 budget period(s); drift found (not repaired) in 1.\n"
        f"  period {period.id} (budget {budget.id}): spent 0.00000025 vs ledger 0 (drift 0.00000025), "
        "reserved 0.01 vs held 0.01 (drift 0) USD\n"
    )
    assert budget.periods.get().spent_nanos == 250

    out = StringIO()
    call_command("reconcile_budgets", stdout=out)
    assert out.getvalue().startswith("Checked 1 budget period(s); drift repaired in 1.\n")
    assert budget.periods.get().spent_nanos == 0


# --- starting current periods ---------------------------------------------------------------------


def test_current_periods_start_starts_each_missing_current_period_once(organization, agent, gpt4o):
    daily = make_budget(organization, "agent daily", agent=agent)
    monthly = make_budget(organization, "org monthly", period="monthly")
    make_budget(organization, "off", is_active=False)
    now = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)
    ledger_row(agent=agent, cost_usd="1.5", occurred_at=now - dt.timedelta(hours=1))
    BudgetPeriod.objects.all().delete()  # e.g. a new day nobody has checked or spent against yet

    assert maintenance.current_periods_start(now=now) == 2
    assert maintenance.current_periods_start(now=now) == 0
    assert sorted(BudgetPeriod.objects.values_list("budget__name", "starts_at", "spent_nanos")) == [
        ("agent daily", dt.datetime(2026, 11, 2, tzinfo=dt.UTC), 1_500_000_000),
        ("org monthly", dt.datetime(2026, 11, 1, tzinfo=dt.UTC), 1_500_000_000),
    ]
    assert {daily.pk, monthly.pk} == set(BudgetPeriod.objects.values_list("budget_id", flat=True))
    # The next day: only the daily budget needs a new period.
    assert maintenance.current_periods_start(now=now + dt.timedelta(days=1)) == 1


def test_the_next_period_is_started_just_before_it_begins(organization, agent, gpt4o):
    """At 23:59 the job also starts tomorrow's row of a daily budget (nothing spent in it yet), so from
    midnight reads find a live row instead of summing the ledger; the monthly one waits for its month."""
    make_budget(organization, "agent daily", agent=agent)
    make_budget(organization, "org monthly", period="monthly")
    before_midnight = dt.datetime(2026, 11, 2, 23, 59, tzinfo=dt.UTC)
    ledger_row(agent=agent, cost_usd="1.5", occurred_at=before_midnight - dt.timedelta(hours=1))
    BudgetPeriod.objects.all().delete()

    assert maintenance.current_periods_start(now=before_midnight - dt.timedelta(minutes=5)) == 2  # today's
    assert maintenance.current_periods_start(now=before_midnight) == 1  # tomorrow's, ahead
    assert maintenance.current_periods_start(now=before_midnight + dt.timedelta(minutes=1, seconds=30)) == 0
    assert sorted(BudgetPeriod.objects.values_list("budget__name", "starts_at", "spent_nanos")) == [
        ("agent daily", dt.datetime(2026, 11, 2, tzinfo=dt.UTC), 1_500_000_000),
        ("agent daily", dt.datetime(2026, 11, 3, tzinfo=dt.UTC), 0),
        ("org monthly", dt.datetime(2026, 11, 1, tzinfo=dt.UTC), 1_500_000_000),
    ]
