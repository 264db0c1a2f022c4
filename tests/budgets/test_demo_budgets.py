"""``manage.py seed_demo_budgets`` after ``seed_demo --days 3``: budgets in each state at each level,
sized from the seeded spend, whatever the moment; idempotent."""

import datetime as dt
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from freezegun import freeze_time

from budgets.management.commands.seed_demo_budgets import SPECS, size_limit
from budgets.models import AlertDelivery, AuditEntry, Budget, BudgetPeriod, PeriodKind
from budgets.selectors import budget_queryset, budgets_live
from budgets.services.periods import ledger_spend_nanos, period_bounds

pytestmark = pytest.mark.django_db

DAYS = 3


def seed_all() -> str:
    call_command("sync_prices", stdout=StringIO(), stderr=StringIO())
    call_command("seed_demo", "--days", str(DAYS), stdout=StringIO(), stderr=StringIO())
    return seed_budgets()


def seed_budgets() -> str:
    out, err = StringIO(), StringIO()
    call_command("seed_demo_budgets", stdout=out, stderr=err)
    assert err.getvalue() == ""
    return out.getvalue()


def states() -> dict[str, tuple[str, str, str, str]]:
    return {
        item.budget.name: (item.status, item.budget.scope, item.budget.enforcement, item.budget.period)
        for item in budgets_live(budgets=budget_queryset().filter(organization__slug="acme"))
    }


def check_the_demo_states() -> None:
    live = states()
    assert {name: status for name, (status, *_) in live.items()} == {spec.name: spec.state for spec in SPECS}
    # Each state at each level.
    assert {(status, scope) for status, scope, *_ in live.values()} == {
        (state, scope)
        for state in ("ok", "warning", "exceeded")
        for scope in ("organization", "project", "sprint", "agent")
    }
    assert {enforcement for _, _, enforcement, _ in live.values()} == {"hard", "soft"}
    budgets = {b.name: b for b in Budget.objects.filter(organization__slug="acme")}
    # A budget keeps its own period unless that period has no spend yet (then a longer one).
    now = dt.datetime.now(dt.UTC)
    for spec in SPECS:
        budget = budgets[spec.name]
        if budget.period != spec.period:
            trial = Budget(organization=budget.organization, period=spec.period, timezone=budget.timezone)
            trial.project, trial.sprint, trial.agent = budget.project, budget.sprint, budget.agent
            trial.model_filter = budget.model_filter
            bounds = period_bounds(trial, now)
            assert bounds is None or ledger_spend_nanos(trial, bounds) == 0, spec.name
    assert budgets["Triage gpt-4o-mini monthly"].model_filter == "gpt-4o-mini"
    downgrade = budgets["PR reviewer daily (downgrades)"]
    assert (downgrade.action, downgrade.downgrade_model, downgrade.enforcement) == (
        "downgrade",
        "claude-haiku-4-5",
        "hard",
    )
    # The figures are the ledger's.
    for item in budgets_live(budgets=budget_queryset().filter(organization__slug="acme")):
        budget = item.budget
        assert item.spent_nanos == ledger_spend_nanos(budget, period_bounds(budget, dt.datetime.now(dt.UTC)))
        if item.status != "ok":
            assert item.spent_nanos > 0


def test_budgets_in_each_state_at_each_level_and_idempotent():
    output = seed_all()

    # Warning budgets (~95 %) crossed 50, 75 and 90 %, exceeded ones (~125 %) 100 % too: 4 x 3 + 4 x 4.
    assert (
        "Demo budgets on 'Acme AI': 12 created, 0 resized, 12 in all; 28 new alert(s); "
        "new alerts are e-mailed to finops@acme.example." in output
    )
    check_the_demo_states()
    before = {b.name: (b.pk, b.limit_usd, b.period) for b in Budget.objects.all()}
    audit_rows = AuditEntry.objects.count()
    assert audit_rows == 12

    again = seed_budgets()

    assert "0 created, 0 resized, 12 in all; 0 new alert(s);" in again
    assert {b.name: (b.pk, b.limit_usd, b.period) for b in Budget.objects.all()} == before
    assert AuditEntry.objects.count() == audit_rows
    # Each active budget's live period was started (so its seeded alerts fired at seed time, without
    # e-mails: the contacts are set after them).
    assert BudgetPeriod.objects.values("budget").distinct().count() == Budget.objects.filter(is_active=True).count()
    assert not AlertDelivery.objects.exists()


def test_states_come_out_right_just_after_every_period_began():
    # Prices first, outside the frozen clock: importing litellm (pydantic) under freezegun would keep
    # its fake datetime class for the rest of the test session.
    call_command("sync_prices", stdout=StringIO(), stderr=StringIO())
    # Monday 1 July 2024, 00:05 in Berlin: a new day, week, month, quarter and sprint all just began.
    with freeze_time("2024-06-30 22:05:00"):
        call_command("seed_demo", "--days", str(DAYS), stdout=StringIO(), stderr=StringIO())
        seed_budgets()
        check_the_demo_states()
        live = states()
    periods = {name: period for name, (*_, period) in live.items()}
    # Budgets that must show spend moved to a longer period that has some; "ok" ones kept theirs.
    assert periods["Acme monthly"] == PeriodKind.MONTHLY
    assert periods["Analyst daily (runaway guard)"] not in (PeriodKind.DAILY, PeriodKind.WEEKLY, PeriodKind.MONTHLY)
    assert periods["Research sprint"] == PeriodKind.TOTAL
    research_sprint = Budget.objects.get(name="Research sprint").sprint
    assert research_sprint.end_date == dt.date(2024, 6, 30)  # the previous sprint, which has spend


@pytest.mark.parametrize(
    ("spent", "state", "limit"),
    [
        (3_000_000_000, "ok", Decimal(10)),
        (3_100_000_000, "ok", Decimal(11)),
        (9_500_000_000, "warning", Decimal(10)),
        (1_234_567_890, "warning", Decimal("1.3")),
        (12_500_000_000, "exceeded", Decimal(10)),
        (1_299_000_000, "exceeded", Decimal("1.0")),
        (0, "ok", Decimal(10)),
        (1_000, "exceeded", Decimal("0.000001")),
    ],
)
def test_size_limit(spent, state, limit):
    assert size_limit(spent, state) == limit


def test_refuses_to_run_before_seed_demo():
    with pytest.raises(CommandError, match=r"run `manage.py seed_demo` first"):
        call_command("seed_demo_budgets", stdout=StringIO())
    assert not Budget.objects.exists()
