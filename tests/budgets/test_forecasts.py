"""Forecast alerts: each budget projected to the end of its own period from its recent burn rate
(the last 7 days, or the period so far when younger), recorded once per period (issue 5).

Ledger rows are one per day at noon UTC, with round amounts, so every burn rate, projection and
exhaustion instant below is exact.
"""

import datetime as dt
from fractions import Fraction

import pytest
from freezegun import freeze_time

from budgets.models import AlertKind, AlertSeverity, BudgetAlert, BudgetPeriod
from budgets.services.forecasts import (
    Projection,
    budget_forecasts_run,
    minimum_elapsed,
    spend_projection,
)
from budgets.services.periods import period_bounds, period_ensure
from tests.budgets.conftest import ledger_row, make_budget
from tests.concurrency import run_together
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory, SprintFactory

UTC = dt.UTC
USD = 1_000_000_000


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def spend_daily(agent, amounts: dict[dt.date, str]) -> None:
    for day, amount in amounts.items():
        ledger_row(agent=agent, cost_usd=amount, occurred_at=dt.datetime.combine(day, dt.time(12), tzinfo=UTC))


def days(first: dt.date, count: int, amount: str) -> dict[dt.date, str]:
    return {first + dt.timedelta(days=i): amount for i in range(count)}


def live_period(budget, at: dt.datetime) -> BudgetPeriod:
    """The budget's live row for the period containing ``at``, initialised from the ledger (as the
    first check or settlement of the period creates it)."""
    return period_ensure(budget, period_bounds(budget, at))[0]


def forecasts() -> list[BudgetAlert]:
    return list(BudgetAlert.objects.filter(kind=AlertKind.FORECAST).order_by("period_start"))


def alert_figures(alert: BudgetAlert) -> dict:
    return {
        "budget": alert.budget_id,
        "period": alert.period_id,
        "period_start": alert.period_start,
        "period_end": alert.period_end,
        "severity": alert.severity,
        "threshold_percent": alert.threshold_percent,
        "limit_nanos": alert.limit_nanos,
        "spend_nanos": alert.spend_nanos,
        "projected_nanos": alert.projected_nanos,
        "projected_exhaustion_at": alert.projected_exhaustion_at,
        "fired_at": alert.fired_at,
        "message": alert.message,
    }


# --- the projection (pure) ------------------------------------------------------------------------


def test_projection_uses_the_last_seven_days_and_the_periods_own_end():
    # A 30-day period, 10 days in: $30 spent, $14 of it in the last 7 days -> $2/day for 20 more days.
    projection = spend_projection(
        spent_nanos=30 * USD,
        limit_nanos=100 * USD,
        period_start=utc(2026, 11, 1),
        period_end=utc(2026, 12, 1),
        now=utc(2026, 11, 11),
        recent_spend_nanos=14 * USD,
    )
    assert projection == Projection(
        burn_nanos_per_second=Fraction(2 * USD, 86_400), projected_nanos=70 * USD, exhaustion_at=None
    )


def test_projection_of_a_young_period_uses_the_period_so_far():
    # 2 days into a 30-day period (minimum 1.5 days): the window is the 2 days, not 7.
    projection = spend_projection(
        spent_nanos=20 * USD,
        limit_nanos=100 * USD,
        period_start=utc(2026, 11, 1),
        period_end=utc(2026, 12, 1),
        now=utc(2026, 11, 3),
        recent_spend_nanos=20 * USD,
    )
    # $10/day: the remaining $80 last 8 days; 28 days left project 20 + 280.
    assert projection == Projection(
        burn_nanos_per_second=Fraction(10 * USD, 86_400), projected_nanos=300 * USD, exhaustion_at=utc(2026, 11, 11)
    )


def test_projection_rounds_half_up_and_the_exhaustion_instant_up_to_the_microsecond():
    start = utc(2026, 11, 1)
    now = start + dt.timedelta(hours=2)  # the whole period so far is the window: 2 h
    common = {"spent_nanos": 10, "limit_nanos": 11, "period_start": start, "now": now, "recent_spend_nanos": 1}
    # 1 nano per 2 h, 1 h left: 10.5 -> 11 (half-up). Exactly, the limit is not reached: no exhaustion.
    one_hour_left = spend_projection(period_end=now + dt.timedelta(hours=1), **common)
    assert (one_hour_left.projected_nanos, one_hour_left.exhaustion_at) == (11, None)
    # A day left: the limit (1 nano more) is reached exactly 2 h from now.
    day_left = spend_projection(period_end=start + dt.timedelta(days=1), **common)
    assert day_left.exhaustion_at == now + dt.timedelta(hours=2)
    # 7 nanos in 2 h: 1 nano takes 7,200 s / 7 = 1,028.571428571... s, rounded up to the microsecond.
    sevenths = spend_projection(
        spent_nanos=0,
        limit_nanos=1,
        period_start=start,
        period_end=start + dt.timedelta(days=1),
        now=now,
        recent_spend_nanos=7,
    )
    assert sevenths.exhaustion_at == now + dt.timedelta(seconds=1028, microseconds=571429)
    assert sevenths.burn_nanos_per_second == Fraction(7, 7200)
    assert sevenths.projected_nanos == 77  # 7 x 22 h / 2 h


def test_projection_when_the_limit_is_reached_exactly_at_the_period_end():
    projection = spend_projection(
        spent_nanos=50 * USD,
        limit_nanos=100 * USD,
        period_start=utc(2026, 11, 1),
        period_end=utc(2026, 11, 21),
        now=utc(2026, 11, 11),
        recent_spend_nanos=35 * USD,
    )
    assert projection.projected_nanos == 100 * USD
    assert projection.exhaustion_at == utc(2026, 11, 21)


def test_no_projection_too_early_outside_the_period_or_once_the_limit_is_reached():
    start, end = utc(2026, 11, 1), utc(2026, 12, 1)  # 30 days: no forecast before 1.5 days
    assert minimum_elapsed(period_start=start, period_end=end, recent_window=dt.timedelta(days=7)) == dt.timedelta(
        hours=36
    )
    common = {"spent_nanos": 50 * USD, "limit_nanos": 100 * USD, "period_start": start, "period_end": end}
    for now in (start + dt.timedelta(minutes=5), start + dt.timedelta(hours=36) - dt.timedelta(microseconds=1)):
        assert spend_projection(now=now, recent_spend_nanos=50 * USD, **common) is None
    assert spend_projection(now=start + dt.timedelta(hours=36), recent_spend_nanos=50 * USD, **common) is not None
    assert spend_projection(now=end, recent_spend_nanos=50 * USD, **common) is None
    over = spend_projection(
        spent_nanos=120 * USD,
        limit_nanos=100 * USD,
        period_start=start,
        period_end=end,
        now=utc(2026, 11, 10),
        recent_spend_nanos=70 * USD,
    )
    assert (over.projected_nanos, over.exhaustion_at) == (330 * USD, None)  # 120 + 70 x 21 / 7


def test_minimum_elapsed_is_an_hour_at_least_and_the_burn_window_at_most():
    start = utc(2026, 11, 1)
    week = dt.timedelta(days=7)
    assert minimum_elapsed(period_start=start, period_end=start + dt.timedelta(hours=10), recent_window=week) == (
        dt.timedelta(hours=1)
    )
    assert minimum_elapsed(period_start=start, period_end=start + dt.timedelta(days=365), recent_window=week) == week


def test_negative_recent_spend_projects_below_the_spend_so_far():
    projection = spend_projection(
        spent_nanos=50 * USD,
        limit_nanos=100 * USD,
        period_start=utc(2026, 11, 1),
        period_end=utc(2026, 12, 1),
        now=utc(2026, 11, 11),
        recent_spend_nanos=-7 * USD,  # a refund booked as a correction row
    )
    assert projection.projected_nanos == 30 * USD and projection.exhaustion_at is None


# --- the job ----------------------------------------------------------------------------------------


@pytest.fixture
def sprint(project):
    return SprintFactory(project=project, slug="s1", start_date=dt.date(2026, 11, 1), end_date=dt.date(2026, 11, 14))


@pytest.mark.django_db
def test_sprint_budget_forecast_fires_from_the_sprints_own_end(project, agent, sprint):
    budget = make_budget(project=project, name="sprint cap", period="sprint", limit_usd="100")
    # $11.50 on each of the sprint's first 2 days, then $7 a day: $72 by 10 Nov, $49 of it in the last
    # 7 days -> $7/day. The sprint ends with 14 Nov (00:00 on the 15th): 5 days -> $107 projected,
    # the remaining $28 last exactly 4 days. (To the month's end it would be $72 + 20 x $7 = $212;
    # at the period-so-far rate of $8/day the limit would fall on 13 Nov 12:00.)
    spend_daily(agent, {dt.date(2026, 11, 1): "11.50", dt.date(2026, 11, 2): "11.50"})
    spend_daily(agent, days(dt.date(2026, 11, 3), 7, "7"))
    now = utc(2026, 11, 10)
    period = live_period(budget, now)

    with freeze_time(now):
        assert budget_forecasts_run() == 1

    [alert] = forecasts()
    assert alert_figures(alert) == {
        "budget": budget.id,
        "period": period.id,
        "period_start": utc(2026, 11, 1),
        "period_end": utc(2026, 11, 15),
        "severity": AlertSeverity.WARNING,
        "threshold_percent": 100,
        "limit_nanos": 100 * USD,
        "spend_nanos": 72 * USD,
        "projected_nanos": 107 * USD,
        "projected_exhaustion_at": utc(2026, 11, 14),
        "fired_at": now,
        "message": "Project Search is forecast to exceed its sprint budget 'sprint cap' on 2026-11-14:"
        " $107.00 projected against $100.00.",
    }


@pytest.mark.django_db
def test_sprint_budget_on_pace_to_end_under_its_limit_does_not_fire(project, agent, sprint):
    # $5/day: $45 by 10 Nov, $70 at the sprint's end (to the month's end it would be $45 + 20 x $5 = $145).
    make_budget(project=project, name="sprint cap", period="sprint", limit_usd="100")
    spend_daily(agent, days(dt.date(2026, 11, 1), 9, "5"))
    assert budget_forecasts_run(now=utc(2026, 11, 10)) == 0
    assert forecasts() == []


@pytest.mark.django_db
def test_monthly_budget_under_its_projection_does_not_fire(project, agent):
    # $1 a day for the first 3 days, then $2 a day: $17 by 11 Nov 00:00 ($14 in the last 7 days),
    # projected 17 + 20 x 2 = $57 of $100.
    budget = make_budget(project=project, name="monthly", limit_usd="100")
    spend_daily(agent, days(dt.date(2026, 11, 1), 3, "1"))
    spend_daily(agent, days(dt.date(2026, 11, 4), 7, "2"))
    live_period(budget, utc(2026, 11, 11))
    assert budget_forecasts_run(now=utc(2026, 11, 11)) == 0
    assert forecasts() == []


@pytest.mark.django_db
def test_once_per_period_and_again_in_the_next(project, agent):
    budget = make_budget(project=project, name="monthly", limit_usd="100")
    # $5 a day for 18 days: $90 by 19 Nov, projected 90 + 12 x 5 = $150, the remaining $10 last 2 days.
    spend_daily(agent, days(dt.date(2026, 11, 1), 18, "5"))
    now = utc(2026, 11, 19)
    live_period(budget, now)
    assert budget_forecasts_run(now=now) == 1
    assert budget_forecasts_run(now=now) == 0  # the same run again
    assert budget_forecasts_run(now=now + dt.timedelta(hours=1)) == 0  # the next hour's run
    assert [(a.period_start, a.projected_exhaustion_at) for a in forecasts()] == [(utc(2026, 11, 1), utc(2026, 11, 21))]

    # December at the same pace: a new period, a new alert ($90 + 13 x 5 = $155 projected).
    spend_daily(agent, days(dt.date(2026, 12, 1), 18, "5"))
    december = utc(2026, 12, 19)
    live_period(budget, december)
    assert budget_forecasts_run(now=december) == 1
    assert [(a.period_start, a.period_end, a.projected_nanos, a.projected_exhaustion_at) for a in forecasts()] == [
        (utc(2026, 11, 1), utc(2026, 12, 1), 150 * USD, utc(2026, 11, 21)),
        (utc(2026, 12, 1), utc(2027, 1, 1), 155 * USD, utc(2026, 12, 21)),
    ]


@pytest.mark.django_db
def test_custom_range_budget_forecasts_to_the_ranges_end(project, agent):
    budget = make_budget(
        project=project,
        name="launch",
        period="custom",
        custom_start=utc(2026, 11, 1),
        custom_end=utc(2026, 11, 21),
        limit_usd="100",
    )
    # $6 a day for 10 days: $60, $6/day; 10 days left -> $120; the remaining $40 last 6 2/3 days.
    spend_daily(agent, days(dt.date(2026, 11, 1), 10, "6"))
    now = utc(2026, 11, 11)
    period = live_period(budget, now)
    assert budget_forecasts_run(now=now) == 1
    [alert] = forecasts()
    assert (alert.period_id, alert.period_start, alert.period_end) == (period.id, utc(2026, 11, 1), utc(2026, 11, 21))
    assert (alert.spend_nanos, alert.projected_nanos) == (60 * USD, 120 * USD)
    assert alert.projected_exhaustion_at == utc(2026, 11, 17, 16)
    assert alert.message == (
        "Project Search is forecast to exceed its custom-range budget 'launch' on 2026-11-17:"
        " $120.00 projected against $100.00."
    )


@pytest.mark.django_db
def test_budget_with_no_recent_spend_does_not_fire(project, agent):
    # $90 on 2 Nov and nothing since: the last 7 days burn nothing.
    budget = make_budget(project=project, name="monthly", limit_usd="100")
    spend_daily(agent, {dt.date(2026, 11, 2): "90"})
    live_period(budget, utc(2026, 11, 20))
    assert budget_forecasts_run(now=utc(2026, 11, 20)) == 0
    assert forecasts() == []


@pytest.mark.django_db
def test_period_five_minutes_old_does_not_forecast(project, agent):
    # $50 in the first 5 minutes of the month would project to $446,400: too early to say.
    budget = make_budget(project=project, name="monthly", limit_usd="100")
    ledger_row(agent=agent, cost_usd="50", occurred_at=utc(2026, 12, 1, 0, 2))
    now = utc(2026, 12, 1, 0, 5)
    live_period(budget, now)
    assert budget_forecasts_run(now=now) == 0
    # 36 hours in (1/20 of December's 31 days is 37.2 h) is still too early; 38 hours is not.
    assert budget_forecasts_run(now=utc(2026, 12, 2, 12)) == 0
    assert budget_forecasts_run(now=utc(2026, 12, 2, 14)) == 1


@pytest.mark.django_db
def test_without_a_period_row_the_ledger_is_read_and_the_alert_creates_the_row(project, agent):
    agent_budget = make_budget(agent=agent, name="planner weekly", period="weekly", limit_usd="10")
    # Monday 2 Nov: $4 on Monday and Tuesday, and 06:00 UTC Wednesday is 2.25 days in (minimum 8.4 h):
    # $8 over 54 h -> projected 8 + 8 x 114 / 54 = $24.888..., the remaining $2 last 13.5 h.
    ledger_row(agent=agent, cost_usd="4", occurred_at=utc(2026, 11, 2, 12))
    ledger_row(agent=agent, cost_usd="4", occurred_at=utc(2026, 11, 3, 12))
    assert not BudgetPeriod.objects.filter(budget=agent_budget).exists()

    assert budget_forecasts_run(now=utc(2026, 11, 4, 6)) == 1

    period = BudgetPeriod.objects.get(budget=agent_budget)
    assert (period.starts_at, period.ends_at, period.spent_nanos) == (utc(2026, 11, 2), utc(2026, 11, 9), 8 * USD)
    [alert] = forecasts()
    assert (alert.period_id, alert.spend_nanos, alert.limit_nanos) == (period.id, 8 * USD, 10 * USD)
    assert alert.projected_nanos == 24_888_888_889
    assert alert.projected_exhaustion_at == utc(2026, 11, 4, 19, 30)
    assert alert.message == (
        "Agent planner is forecast to exceed its weekly budget 'planner weekly' on 2026-11-04:"
        " $24.89 projected against $10.00."
    )


@pytest.mark.django_db
def test_coverage_rules_total_budgets_and_the_organization_filter(project, agent):
    # Only gpt-4o (provider-prefixed or not) counts for this budget: $6/day of gpt-4o-mini does not.
    make_budget(project=project, name="gpt-4o only", limit_usd="100", model_filter="gpt-4o")
    for day in days(dt.date(2026, 11, 1), 10, "6"):
        at = dt.datetime.combine(day, dt.time(12), tzinfo=UTC)
        ledger_row(agent=agent, cost_usd="6", occurred_at=at, model="gpt-4o-mini")
        ledger_row(agent=agent, cost_usd="1", occurred_at=at, model="openai/gpt-4o")
    # $70 of $80 and still spending, but a lifetime budget has no end to forecast to.
    make_budget(project=project, name="lifetime", period="total", limit_usd="80")
    # Another organization spending $9/day against $100 a month.
    other_agent = AgentFactory(project=ProjectFactory(organization=OrganizationFactory(slug="other")))
    other = make_budget(project=other_agent.project, name="other monthly", limit_usd="100")
    spend_daily(other_agent, days(dt.date(2026, 11, 1), 10, "9"))

    now = utc(2026, 11, 11)
    assert budget_forecasts_run(now=now, organization_id=project.organization_id) == 0
    # A project-wide budget counts every model: $70 spent, $7/day -> $70 + 20 x $7 = $210 projected.
    wide = make_budget(project=project, name="search", limit_usd="150")
    assert budget_forecasts_run(now=now, organization_id=project.organization_id) == 1
    assert [(a.budget_id, a.spend_nanos, a.projected_nanos) for a in forecasts()] == [(wide.id, 70 * USD, 210 * USD)]
    # Every organization: the other one's budget too ($90 + 20 x $9), ours not twice.
    assert budget_forecasts_run(now=now) == 1
    assert sorted((a.budget_id, a.projected_nanos) for a in forecasts()) == sorted(
        [(wide.id, 210 * USD), (other.id, 270 * USD)]
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_record_one_alert_and_one_period_row(project, agent):
    # No period row yet: the racing runs also race to create it (period_ensure) for their alert.
    budget = make_budget(project=project, name="monthly", limit_usd="100")
    spend_daily(agent, days(dt.date(2026, 11, 1), 18, "5"))

    results = run_together([lambda: budget_forecasts_run(now=utc(2026, 11, 19)) for _ in range(4)])

    assert sorted(results) == [0, 0, 0, 1]
    assert BudgetPeriod.objects.filter(budget=budget).count() == 1
    assert [(a.spend_nanos, a.projected_nanos) for a in forecasts()] == [(90 * USD, 150 * USD)]
