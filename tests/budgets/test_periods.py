"""Budget periods: calendar bounds in the budget's time zone (DST included), sprint, total and custom
periods, model filters, the ledger sum's rounding and the concurrent creation of a period row."""

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.db import transaction

from budgets.models import Budget, BudgetPeriod, usd_to_nanos
from budgets.services.periods import (
    EPOCH,
    Bounds,
    ledger_spend_nanos,
    model_matches,
    period_bounds,
    period_ensure,
)
from costs.models import UsageRecord
from costs.services.api_keys import api_key_create
from costs.services.ingest import usage_ingest
from tests.budgets.test_maintenance import result, start, wait_for_lock_waiters
from tests.costs.test_ingest import usage
from tests.factories import AgentFactory, SprintFactory

UTC = dt.UTC


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def bounds(kind: str, tz: str, at: dt.datetime) -> tuple[dt.datetime, dt.datetime | None] | None:
    found = period_bounds(Budget(period=kind, timezone=tz), at)
    return None if found is None else (found.starts_at, found.ends_at)


# --- calendar periods ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "tz", "at", "expected"),
    [
        # UTC: the day, ISO week (from Monday), month, quarter and year around their boundaries.
        ("daily", "UTC", utc(2026, 11, 2, 23, 59, 59), (utc(2026, 11, 2), utc(2026, 11, 3))),
        ("daily", "UTC", utc(2026, 11, 3), (utc(2026, 11, 3), utc(2026, 11, 4))),
        ("weekly", "UTC", utc(2026, 11, 1, 23, 59), (utc(2026, 10, 26), utc(2026, 11, 2))),  # Sunday
        ("weekly", "UTC", utc(2026, 11, 2), (utc(2026, 11, 2), utc(2026, 11, 9))),  # Monday
        ("monthly", "UTC", utc(2026, 12, 31, 23, 59), (utc(2026, 12, 1), utc(2027, 1, 1))),
        ("quarterly", "UTC", utc(2026, 3, 31, 23, 59, 59), (utc(2026, 1, 1), utc(2026, 4, 1))),
        ("quarterly", "UTC", utc(2026, 4, 1), (utc(2026, 4, 1), utc(2026, 7, 1))),
        ("quarterly", "UTC", utc(2026, 12, 31), (utc(2026, 10, 1), utc(2027, 1, 1))),
        ("yearly", "UTC", utc(2026, 6, 15), (utc(2026, 1, 1), utc(2027, 1, 1))),
        # Europe/Berlin (UTC+1 in winter, +2 in summer): local midnight.
        ("daily", "Europe/Berlin", utc(2026, 11, 2, 22, 59, 59), (utc(2026, 11, 1, 23), utc(2026, 11, 2, 23))),
        ("daily", "Europe/Berlin", utc(2026, 11, 2, 23), (utc(2026, 11, 2, 23), utc(2026, 11, 3, 23))),
        ("daily", "Europe/Berlin", utc(2026, 7, 1, 21, 59), (utc(2026, 6, 30, 22), utc(2026, 7, 1, 22))),
        ("daily", "Europe/Berlin", utc(2026, 7, 1, 22), (utc(2026, 7, 1, 22), utc(2026, 7, 2, 22))),
        # ... across the DST changes: 29 March 2026 has 23 hours, 25 October 2026 has 25.
        ("daily", "Europe/Berlin", utc(2026, 3, 29, 12), (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))),
        ("daily", "Europe/Berlin", utc(2026, 10, 25, 1, 30), (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))),
        ("daily", "Europe/Berlin", utc(2026, 10, 25, 22, 59), (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))),
        ("weekly", "Europe/Berlin", utc(2026, 10, 25, 12), (utc(2026, 10, 18, 22), utc(2026, 10, 25, 23))),
        ("weekly", "Europe/Berlin", utc(2026, 10, 25, 23), (utc(2026, 10, 25, 23), utc(2026, 11, 1, 23))),
        ("monthly", "Europe/Berlin", utc(2026, 3, 15), (utc(2026, 2, 28, 23), utc(2026, 3, 31, 22))),
        ("monthly", "Europe/Berlin", utc(2026, 10, 31, 22, 59), (utc(2026, 9, 30, 22), utc(2026, 10, 31, 23))),
        ("monthly", "Europe/Berlin", utc(2026, 10, 31, 23), (utc(2026, 10, 31, 23), utc(2026, 11, 30, 23))),
        ("quarterly", "Europe/Berlin", utc(2026, 11, 15), (utc(2026, 9, 30, 22), utc(2026, 12, 31, 23))),
        ("yearly", "Europe/Berlin", utc(2026, 12, 31, 23), (utc(2026, 12, 31, 23), utc(2027, 12, 31, 23))),
        # America/New_York (UTC-5 in winter, -4 in summer; DST ends 1 November 2026, starts 8 March).
        ("daily", "America/New_York", utc(2026, 11, 2, 4, 59), (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))),
        ("daily", "America/New_York", utc(2026, 11, 2, 5), (utc(2026, 11, 2, 5), utc(2026, 11, 3, 5))),
        ("daily", "America/New_York", utc(2026, 3, 8, 12), (utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))),
        ("weekly", "America/New_York", utc(2026, 11, 2, 4, 59), (utc(2026, 10, 26, 4), utc(2026, 11, 2, 5))),
        ("monthly", "America/New_York", utc(2026, 11, 1, 3, 59), (utc(2026, 10, 1, 4), utc(2026, 11, 1, 4))),
        ("monthly", "America/New_York", utc(2026, 11, 1, 4), (utc(2026, 11, 1, 4), utc(2026, 12, 1, 5))),
        ("quarterly", "America/New_York", utc(2026, 4, 1, 3, 59), (utc(2026, 1, 1, 5), utc(2026, 4, 1, 4))),
        ("yearly", "America/New_York", utc(2026, 1, 1, 4, 59), (utc(2025, 1, 1, 5), utc(2026, 1, 1, 5))),
        ("yearly", "America/New_York", utc(2026, 1, 1, 5), (utc(2026, 1, 1, 5), utc(2027, 1, 1, 5))),
    ],
)
def test_calendar_periods_start_at_local_midnight(kind, tz, at, expected):
    assert bounds(kind, tz, at) == expected
    starts_at, ends_at = expected
    assert Bounds(starts_at, ends_at).contains(at)


def test_total_period_is_everything_since_the_epoch():
    found = period_bounds(Budget(period="total"), utc(2026, 11, 2))
    assert found == Bounds(EPOCH, None)
    assert found.contains(utc(2099, 1, 1)) and found.contains(EPOCH) and not found.contains(utc(1999, 12, 31))


def test_custom_period_is_its_half_open_range():
    budget = Budget(period="custom", custom_start=utc(2026, 11, 1, 12), custom_end=utc(2026, 11, 20))

    assert period_bounds(budget, utc(2026, 11, 1, 12)) == Bounds(utc(2026, 11, 1, 12), utc(2026, 11, 20))
    assert period_bounds(budget, utc(2026, 11, 19, 23, 59)) == Bounds(utc(2026, 11, 1, 12), utc(2026, 11, 20))
    assert period_bounds(budget, utc(2026, 11, 20)) is None
    assert period_bounds(budget, utc(2026, 11, 1, 11, 59)) is None


# --- sprint periods -----------------------------------------------------------------------------


@pytest.fixture
def new_york_org(organization):
    organization.timezone = "America/New_York"
    organization.save()
    return organization


@pytest.mark.django_db
def test_sprint_period_of_a_budget_on_a_sprint_uses_its_dates_in_the_org_time_zone(new_york_org, project):
    sprint = SprintFactory(project=project, start_date=dt.date(2026, 11, 1), end_date=dt.date(2026, 11, 14))
    budget = Budget.objects.create(
        organization=new_york_org, sprint=sprint, name="s", limit_usd=Decimal("1"), period="sprint"
    )
    budget = Budget.objects.select_related("organization", "sprint").get(pk=budget.pk)
    # 1 November 00:00 EDT (UTC-4) to 15 November 00:00 EST (UTC-5).
    expected = Bounds(utc(2026, 11, 1, 4), utc(2026, 11, 15, 5))

    assert period_bounds(budget, utc(2026, 11, 1, 4)) == expected
    assert period_bounds(budget, utc(2026, 11, 15, 4, 59)) == expected
    assert period_bounds(budget, utc(2026, 11, 15, 5)) is None
    assert period_bounds(budget, utc(2026, 11, 1, 3, 59)) is None


@pytest.mark.django_db
def test_sprint_period_of_a_project_or_agent_budget_is_the_running_sprint(
    new_york_org, project, agent, django_assert_num_queries
):
    first = SprintFactory(project=project, slug="a", start_date=dt.date(2026, 11, 1), end_date=dt.date(2026, 11, 14))
    SprintFactory(project=project, slug="b", start_date=dt.date(2026, 11, 20), end_date=dt.date(2026, 11, 30))
    SprintFactory(start_date=dt.date(2026, 11, 15), end_date=dt.date(2026, 11, 19))  # another project's
    project_budget = Budget.objects.create(
        organization=new_york_org, project=project, name="p", limit_usd=Decimal("1"), period="sprint"
    )
    agent_budget = Budget.objects.create(
        organization=new_york_org, agent=agent, name="a", limit_usd=Decimal("1"), period="sprint"
    )
    project_budget = Budget.objects.select_related("organization").get(pk=project_budget.pk)
    agent_budget = Budget.objects.select_related("organization", "agent").get(pk=agent_budget.pk)

    assert period_bounds(project_budget, utc(2026, 11, 10)) == Bounds(utc(2026, 11, 1, 4), utc(2026, 11, 15, 5))
    assert period_bounds(agent_budget, utc(2026, 11, 25)) == Bounds(utc(2026, 11, 20, 5), utc(2026, 12, 1, 5))
    # Between sprints (another project's sprint does not count): no period.
    assert period_bounds(project_budget, utc(2026, 11, 17)) is None
    assert period_bounds(agent_budget, utc(2026, 11, 17)) is None
    # With the candidate sprints passed in, no query.
    sprints = list(first.project.sprints.all())
    with django_assert_num_queries(0):
        assert period_bounds(project_budget, utc(2026, 11, 10), sprints=sprints).starts_at == utc(2026, 11, 1, 4)
        assert period_bounds(agent_budget, utc(2026, 11, 17), sprints=sprints) is None


@pytest.mark.django_db
def test_sprint_period_with_no_sprint_at_all_is_none(organization, project):
    budget = Budget.objects.create(
        organization=organization, project=project, name="p", limit_usd=Decimal("1"), period="sprint"
    )

    assert period_bounds(budget, utc(2026, 11, 10)) is None


# --- model filters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_filter", "model", "matches"),
    [
        ("", "anything", True),
        ("gpt-4o", "gpt-4o", True),
        ("gpt-4o", "openai/gpt-4o", True),
        ("gpt-4o", "azure/openai/gpt-4o", True),
        ("gpt-4o", "gpt-4o-mini", False),
        ("gpt-4o", "xgpt-4o", False),
        ("gpt-4o", "GPT-4o", False),
        ("openai/gpt-4o", "openai/gpt-4o", True),
        ("openai/gpt-4o", "gpt-4o", False),
    ],
)
def test_model_matches(model_filter, model, matches):
    assert model_matches(model_filter, model) is matches


# --- the ledger sum ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ledger_spend_rounds_each_row_half_up_to_the_nano_dollar(organization, project, agent):
    other_agent = AgentFactory(project=project, name="other")
    key, _ = api_key_create(organization=organization, project=project, name="k")
    costs = {"a": "0.0000000005", "b": "0.0000000025", "c": "0.0000000015", "d": "0.000000000499", "e": "1.23456789"}
    usage_ingest(
        api_key=key,
        records=[
            *(
                usage(request_id=rid, agent="planner", model="unpriced-x", provider_cost_usd=c)
                for rid, c in costs.items()
            ),
            usage(request_id="no-cost", agent="planner", model="unpriced-x"),
            usage(request_id="other-agent", agent="other", model="unpriced-x", provider_cost_usd="5"),
            usage(request_id="other-model", agent="planner", model="filtered-out", provider_cost_usd="7"),
            usage(
                request_id="next-day",
                agent="planner",
                model="unpriced-x",
                provider_cost_usd="9",
                occurred_at="2026-11-03T00:00:00Z",
            ),
        ],
        now=utc(2026, 11, 3, 0, 1),
    )
    assert UsageRecord.objects.filter(request_id="no-cost", cost_usd__isnull=True).exists()
    budget = Budget.objects.create(
        organization=organization,
        agent=agent,
        name="b",
        limit_usd=Decimal("1"),
        period="daily",
        model_filter="unpriced-x",
    )

    spent = ledger_spend_nanos(budget, period_bounds(budget, utc(2026, 11, 2, 10)))

    # Half-up per row: 1 + 3 + 2 + 0 + 1,234,567,890. (Banker's rounding would give 2 for "b";
    # rounding the sum instead of each row would give 5 for the four tiny ones.)
    assert spent == 1_234_567_896
    assert spent == sum(usd_to_nanos(Decimal(c)) for c in costs.values())
    assert ledger_spend_nanos(budget, Bounds(EPOCH, None)) == spent + 9_000_000_000
    assert ledger_spend_nanos(Budget(organization=organization, agent=other_agent), Bounds(EPOCH, None)) == 5 * 10**9


# --- the live period row ----------------------------------------------------------------------


@pytest.mark.django_db
def test_period_ensure_creates_once_from_the_ledger(organization, project, agent):
    key, _ = api_key_create(organization=organization, project=project, name="k")
    usage_ingest(
        api_key=key,
        records=[usage(agent="planner", model="unpriced-x", provider_cost_usd="0.25")],
        now=utc(2026, 11, 2, 12),
    )
    budget = Budget.objects.create(
        organization=organization, agent=agent, name="b", limit_usd=Decimal("2"), grace_percent=Decimal("10")
    )
    found = period_bounds(budget, utc(2026, 11, 2, 10))

    period, created = period_ensure(budget, found)
    again, created_again = period_ensure(budget, found)

    assert (created, created_again, again.pk) == (True, False, period.pk)
    assert (period.starts_at, period.ends_at) == (utc(2026, 11, 1), utc(2026, 12, 1))  # monthly by default
    assert (period.limit_nanos, period.ceiling_nanos, period.spent_nanos, period.reserved_nanos) == (
        2_000_000_000,
        2_200_000_000,
        250_000_000,
        0,
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_transactions_creating_the_same_period_make_one_row(organization, agent):
    budget = Budget.objects.create(
        organization=organization, agent=agent, name="b", limit_usd=Decimal("1"), period="daily"
    )
    found = period_bounds(budget, utc(2026, 11, 2, 10))
    created_first, go = threading.Event(), threading.Event()

    def first():
        with transaction.atomic():
            outcome = period_ensure(budget, found)
            created_first.set()
            assert go.wait(timeout=30)  # hold the uncommitted row while the other one tries
        return outcome

    one, one_out = start(first)
    assert created_first.wait(timeout=30), one_out
    two, two_out = start(lambda: period_ensure(budget, found))
    wait_for_lock_waiters()  # the second insert waits on the unique index for the first
    go.set()

    (period_one, created_one), (period_two, created_two) = result(one, one_out), result(two, two_out)
    assert (created_one, created_two) == (True, False)
    assert period_one.pk == period_two.pk
    assert BudgetPeriod.objects.filter(budget=budget).count() == 1
