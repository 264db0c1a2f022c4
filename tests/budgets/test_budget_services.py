"""Operators' budget services (create / update / delete / period_reset, all audited) and the live
status selector.

Costs are written straight into the ledger here with hand-picked amounts, so figures are exact.
"""

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import F

from budgets.models import (
    AuditAction,
    AuditEntry,
    Budget,
    BudgetPeriod,
    Reservation,
    ReservationHold,
    ReservationStatus,
    usd_to_nanos,
)
from budgets.selectors import budget_queryset, budgets_live, status_of
from budgets.services.budgets import budget_create, budget_delete, budget_update, period_reset
from budgets.services.periods import ledger_spend_nanos, period_bounds, period_ensure
from config.errors import ValidationFailed
from costs.models import UsageRecord
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory, SprintFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 4, 12, 0, tzinfo=dt.UTC)
TODAY = dt.datetime(2026, 11, 4, tzinfo=dt.UTC)
TOMORROW = dt.datetime(2026, 11, 5, tzinfo=dt.UTC)


@pytest.fixture
def operator():
    return get_user_model().objects.create_user("olivia", is_staff=True)


def spend(
    agent, cost: str, *, request_id: str, at: dt.datetime = NOW - dt.timedelta(hours=1), model="gpt-4o", sprint=None
):
    """A ledger row of ``cost`` USD (null: unpriced) for ``agent``."""
    return UsageRecord.objects.create(
        organization=agent.project.organization,
        project=agent.project,
        sprint=sprint,
        agent=agent,
        request_id=request_id,
        model=model,
        prompt_tokens=100,
        completion_tokens=10,
        occurred_at=at,
        cost_usd=None if cost is None else Decimal(cost),
        cost_source="unpriced" if cost is None else "computed",
    )


def hold(agent, periods: list[BudgetPeriod], nanos: int, *, status=ReservationStatus.HELD) -> Reservation:
    """A reservation of ``nanos`` on each of ``periods`` (rows + counters), as a check would make."""
    reservation = Reservation.objects.create(
        organization=agent.project.organization,
        agent=agent,
        model="gpt-4o",
        amount_nanos=nanos,
        status=status,
        expires_at=NOW + dt.timedelta(minutes=10),
    )
    for period in periods:
        ReservationHold.objects.create(reservation=reservation, period=period, amount_nanos=nanos)
        if status == ReservationStatus.HELD:
            BudgetPeriod.objects.filter(pk=period.pk).update(reserved_nanos=F("reserved_nanos") + nanos)
    return reservation


def current_period(budget: Budget) -> BudgetPeriod:
    return period_ensure(budget, period_bounds(budget, NOW))[0]


# --- budget_create ----------------------------------------------------------------------------


def test_create_writes_the_budget_and_an_audit_row_with_every_field(organization, agent, operator):
    budget = budget_create(
        organization=organization,
        agent=agent,
        name="planner daily",
        limit_usd=Decimal("1.50"),
        period="daily",
        timezone="Europe/Berlin",
        enforcement="hard",
        grace_percent=Decimal("10"),
        actor=operator,
    )

    stored = Budget.objects.get()
    assert (stored.pk, stored.agent, stored.scope, stored.limit_usd) == (budget.pk, agent, "agent", Decimal("1.5"))
    assert stored.thresholds == [50, 75, 90, 100]
    entry = AuditEntry.objects.get()
    assert (entry.organization, entry.budget, entry.agent, entry.actor, entry.actor_label, entry.action) == (
        organization,
        budget,
        agent,
        operator,
        "olivia",
        AuditAction.BUDGET_CREATED,
    )
    assert entry.changes == {
        "name": {"old": None, "new": "planner daily"},
        "project": {"old": None, "new": None},
        "sprint": {"old": None, "new": None},
        "agent": {"old": None, "new": {"id": agent.pk, "name": "acme/search/planner"}},
        "limit_usd": {"old": None, "new": "1.5"},
        "period": {"old": None, "new": "daily"},
        "custom_start": {"old": None, "new": None},
        "custom_end": {"old": None, "new": None},
        "timezone": {"old": None, "new": "Europe/Berlin"},
        "model_filter": {"old": None, "new": ""},
        "enforcement": {"old": None, "new": "hard"},
        "grace_percent": {"old": None, "new": "10"},
        "thresholds": {"old": None, "new": [50, 75, 90, 100]},
        "action": {"old": None, "new": "block"},
        "downgrade_model": {"old": None, "new": ""},
        "alert_emails": {"old": None, "new": ""},
        "is_active": {"old": None, "new": True},
    }


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"limit_usd": Decimal("0")}, {"limit_usd": ["The limit must be more than 0."]}),
        ({"action": "downgrade"}, {"downgrade_model": ["Name the cheaper model to downgrade to."]}),
        (
            {"period": "custom"},
            {"custom_start": ["A custom period needs a start."], "custom_end": ["A custom period needs an end."]},
        ),
        (
            {"period": "custom", "custom_start": TOMORROW, "custom_end": TODAY},
            {"custom_end": ["The end must be after the start."]},
        ),
        ({"period": "sprint"}, {"period": ["A sprint period needs a project, sprint or agent budget."]}),
        ({"action": "pause_agent"}, {"action": ["Only an agent budget can pause its agent."]}),
        ({"timezone": "Mars/Olympus"}, {"timezone": ["Unknown time zone 'Mars/Olympus'."]}),
        (
            {"thresholds": [50, "x"]},
            {"thresholds": ["A list of whole percentages between 1 and 1000, e.g. [50, 75, 90, 100]."]},
        ),
    ],
)
def test_create_refuses_invalid_budgets_and_writes_nothing(organization, operator, fields, errors):
    fields = {"limit_usd": Decimal("5"), **fields}
    with pytest.raises(ValidationFailed) as caught:
        budget_create(organization=organization, name="bad", actor=operator, **fields)

    assert caught.value.code == "validation_error"
    assert caught.value.fields == errors
    assert not Budget.objects.exists()
    assert not AuditEntry.objects.exists()


def test_create_refuses_a_node_of_another_organization(organization, operator):
    stranger = AgentFactory(project=ProjectFactory(organization=OrganizationFactory(slug="globex")), name="x")

    with pytest.raises(ValidationFailed) as caught:
        budget_create(organization=organization, agent=stranger, name="bad", limit_usd=Decimal(1), actor=operator)

    assert caught.value.fields == {"agent": ["This agent belongs to another organization."]}
    assert not Budget.objects.exists() and not AuditEntry.objects.exists()


# --- budget_update ----------------------------------------------------------------------------


def test_limit_change_rewrites_current_and_future_periods_not_past_ones(organization, agent, operator):
    budget = budget_create(organization=organization, agent=agent, name="b", limit_usd=Decimal(10), period="daily")
    current = current_period(budget)
    past = period_ensure(budget, period_bounds(budget, NOW - dt.timedelta(days=1)))[0]
    future = period_ensure(budget, period_bounds(budget, NOW + dt.timedelta(days=1)))[0]
    BudgetPeriod.objects.filter(pk=current.pk).update(spent_nanos=4_000_000_000, reserved_nanos=1_000_000_000)

    budget_update(
        budget=budget, data={"limit_usd": Decimal("20"), "grace_percent": Decimal(5)}, actor=operator, now=NOW
    )

    current.refresh_from_db(), past.refresh_from_db(), future.refresh_from_db()
    assert (current.limit_nanos, current.ceiling_nanos) == (20_000_000_000, 21_000_000_000)
    assert (future.limit_nanos, future.ceiling_nanos) == (20_000_000_000, 21_000_000_000)
    assert (past.limit_nanos, past.ceiling_nanos) == (10_000_000_000, 10_000_000_000)
    # Spend and holds are kept: only the ceiling moved.
    assert (current.spent_nanos, current.reserved_nanos) == (4_000_000_000, 1_000_000_000)
    entry = AuditEntry.objects.get(action=AuditAction.BUDGET_CHANGED)
    assert (entry.actor, entry.budget) == (operator, budget)
    assert entry.changes == {"limit_usd": {"old": "10", "new": "20"}, "grace_percent": {"old": "0", "new": "5"}}


def test_switching_to_soft_lowers_the_ceiling_to_the_limit(organization, agent):
    budget = budget_create(
        organization=organization, agent=agent, name="b", limit_usd=Decimal(10), grace_percent=Decimal(50)
    )
    period = current_period(budget)
    assert period.ceiling_nanos == 15_000_000_000

    budget_update(budget=budget, data={"enforcement": "soft"}, now=NOW)

    period.refresh_from_db()
    assert (period.limit_nanos, period.ceiling_nanos) == (10_000_000_000, 10_000_000_000)
    assert AuditEntry.objects.get(action=AuditAction.BUDGET_CHANGED).actor_label == "system"


@pytest.mark.parametrize(
    "data",
    [{"period": "weekly"}, {"timezone": "Europe/Berlin"}, {"model_filter": "gpt-4o"}, {"is_active": False}],
)
def test_reshaping_drops_live_periods_and_their_holds(organization, agent, data):
    budget = budget_create(organization=organization, agent=agent, name="b", limit_usd=Decimal(10), period="daily")
    period = current_period(budget)
    reservation = hold(agent, [period], 5_000)

    budget_update(budget=budget, data=data, now=NOW)

    # The old rows are gone with their holds; an active budget's current period starts again from
    # the ledger, in its new shape.
    assert not BudgetPeriod.objects.filter(pk=period.pk).exists()
    assert BudgetPeriod.objects.filter(budget=budget).count() == (0 if data == {"is_active": False} else 1)
    assert not ReservationHold.objects.exists()
    # The reservation itself stays held; its usage will be counted as spend when it arrives.
    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.HELD
    assert AuditEntry.objects.get(action=AuditAction.BUDGET_CHANGED).changes.keys() == data.keys()


def test_moving_a_budget_to_another_node(organization, project, agent, operator):
    budget = budget_create(organization=organization, agent=agent, name="b", limit_usd=Decimal(10))
    old = current_period(budget)

    budget_update(budget=budget, data={"project": project}, actor=operator)

    budget.refresh_from_db()
    assert (budget.scope, budget.project, budget.agent) == ("project", project, None)
    assert not BudgetPeriod.objects.filter(pk=old.pk).exists()
    assert BudgetPeriod.objects.filter(budget=budget).count() == 1
    assert AuditEntry.objects.get(action=AuditAction.BUDGET_CHANGED).changes == {
        "project": {"old": None, "new": {"id": project.pk, "name": "acme/search"}},
        "agent": {"old": {"id": agent.pk, "name": "acme/search/planner"}, "new": None},
    }


def test_an_update_that_changes_nothing_writes_nothing(organization, agent):
    budget = budget_create(organization=organization, agent=agent, name="b", limit_usd=Decimal(10))
    period = current_period(budget)

    budget_update(budget=budget, data={"limit_usd": Decimal("10.000"), "name": "b"})

    assert not AuditEntry.objects.filter(action=AuditAction.BUDGET_CHANGED).exists()
    assert BudgetPeriod.objects.filter(pk=period.pk).exists()


def test_an_invalid_update_changes_nothing(organization, agent):
    budget = budget_create(organization=organization, agent=agent, name="b", limit_usd=Decimal(10))
    period = current_period(budget)

    with pytest.raises(ValidationFailed) as caught:
        budget_update(budget=budget, data={"limit_usd": Decimal(-1), "period": "weekly"})
    with pytest.raises(ValidationFailed) as unknown:
        budget_update(budget=budget, data={"organization": OrganizationFactory()})

    assert caught.value.fields == {"limit_usd": ["The limit must be more than 0."]}
    assert unknown.value.fields == {"organization": ["This field cannot be changed."]}
    budget.refresh_from_db()
    assert (budget.limit_usd, budget.period) == (Decimal(10), "monthly")
    assert BudgetPeriod.objects.filter(pk=period.pk).exists()
    assert not AuditEntry.objects.filter(action=AuditAction.BUDGET_CHANGED).exists()


# --- budget_delete ----------------------------------------------------------------------------


def test_delete_removes_budget_and_periods_and_keeps_an_audit_row(organization, agent, operator):
    budget = budget_create(organization=organization, agent=agent, name="gone", limit_usd=Decimal(3))
    current_period(budget)
    budget_id = budget.pk

    budget_delete(budget=budget, actor=operator)

    assert not Budget.objects.exists() and not BudgetPeriod.objects.exists()
    entry = AuditEntry.objects.get(action=AuditAction.BUDGET_DELETED)
    assert (entry.budget, entry.agent, entry.actor, entry.organization) == (None, agent, operator, organization)
    assert entry.changes["id"] == {"old": budget_id, "new": None}
    assert entry.changes["name"] == {"old": "gone", "new": None}
    assert entry.changes["limit_usd"] == {"old": "3", "new": None}
    # The creation row outlives the budget too (its link is emptied).
    assert AuditEntry.objects.get(action=AuditAction.BUDGET_CREATED).budget is None


# --- period_reset -----------------------------------------------------------------------------


def test_period_reset_releases_held_reservations_and_rederives_spend(organization, project, agent, operator):
    budget = budget_create(organization=organization, agent=agent, name="b", limit_usd=Decimal(10), period="daily")
    other = budget_create(organization=organization, project=project, name="p", limit_usd=Decimal(10), period="daily")
    spend(agent, "1.25", request_id="r1")
    spend(agent, "0.5", request_id="r2")
    spend(agent, "7", request_id="yesterday", at=NOW - dt.timedelta(days=1))
    period, other_period = current_period(budget), current_period(other)
    held = hold(agent, [period, other_period], 300_000_000)
    settled = hold(agent, [period], 100_000_000, status=ReservationStatus.SETTLED)
    elsewhere = hold(agent, [other_period], 200_000_000)
    # Drift: the live counter lost a settlement.
    BudgetPeriod.objects.filter(pk=period.pk).update(spent_nanos=F("spent_nanos") - 500_000_000)

    result = period_reset(budget=budget, actor=operator, now=NOW)

    assert (result.period.pk, result.released) == (period.pk, 1)
    assert (result.spent_before, result.spent_after) == (1_250_000_000, 1_750_000_000)
    assert (result.reserved_before, result.reserved_after) == (300_000_000, 0)
    period.refresh_from_db(), other_period.refresh_from_db()
    assert (period.spent_nanos, period.reserved_nanos) == (1_750_000_000, 0)
    assert period.spent_nanos == ledger_spend_nanos(budget, period_bounds(budget, NOW))
    # The released reservation gave back its hold on the other budget too; the others are untouched.
    assert other_period.reserved_nanos == 200_000_000
    statuses = {r.pk: (r.status, r.closed_at) for r in Reservation.objects.all()}
    assert statuses == {
        held.pk: (ReservationStatus.RELEASED, NOW),
        settled.pk: (ReservationStatus.SETTLED, None),
        elsewhere.pk: (ReservationStatus.HELD, None),
    }
    entry = AuditEntry.objects.get(action=AuditAction.PERIOD_RESET)
    assert (entry.budget, entry.actor) == (budget, operator)
    assert entry.changes == {
        "period_start": "2026-11-04T00:00:00+00:00",
        "period_end": "2026-11-05T00:00:00+00:00",
        "spent_usd": {"old": "1.25", "new": "1.75"},
        "reserved_usd": {"old": "0.3", "new": "0"},
        "released_reservations": 1,
    }

    # Twice: nothing more to release, nothing moves (still audited: an operator did press it).
    again = period_reset(budget=budget, actor=operator, now=NOW)
    assert (again.released, again.spent_after, again.reserved_after) == (0, 1_750_000_000, 0)
    other_period.refresh_from_db()
    assert other_period.reserved_nanos == 200_000_000
    assert AuditEntry.objects.filter(action=AuditAction.PERIOD_RESET).count() == 2


def test_period_reset_creates_a_missing_period_from_the_ledger(organization, agent):
    budget = budget_create(organization=organization, agent=agent, name="b", limit_usd=Decimal(10), period="daily")
    spend(agent, "2", request_id="r1")
    BudgetPeriod.objects.filter(budget=budget).delete()  # e.g. a period nobody touched yet

    result = period_reset(budget=budget, now=NOW)

    assert (result.released, result.spent_before, result.spent_after) == (0, 2_000_000_000, 2_000_000_000)
    assert BudgetPeriod.objects.get(budget=budget).spent_nanos == 2_000_000_000


def test_period_reset_without_a_current_period_does_nothing(organization, agent):
    budget = budget_create(
        organization=organization,
        agent=agent,
        name="old campaign",
        limit_usd=Decimal(10),
        period="custom",
        custom_start=TODAY - dt.timedelta(days=10),
        custom_end=TODAY - dt.timedelta(days=5),
    )

    result = period_reset(budget=budget, now=NOW)

    assert result.period is None
    assert not BudgetPeriod.objects.exists()
    assert not AuditEntry.objects.filter(action=AuditAction.PERIOD_RESET).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_period_reset_never_loses_a_concurrent_settlement(organization, agent):
    """A settlement in flight (ledger row written, counter bumped, not committed) while an operator
    resets: the reset waits for the period row, then reads the committed ledger — the books agree."""
    budget = budget_create(organization=organization, agent=agent, name="b", limit_usd=Decimal(10), period="daily")
    spend(agent, "1", request_id="before")
    period = current_period(budget)
    settling, go_on = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def settle():
        try:
            with transaction.atomic():
                spend(agent, "0.25", request_id="concurrent")
                BudgetPeriod.objects.filter(pk=period.pk).update(spent_nanos=F("spent_nanos") + 250_000_000)
                settling.set()
                go_on.wait(10)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    def reset():
        try:
            period_reset(budget=budget, now=NOW)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    settler = threading.Thread(target=settle)
    settler.start()
    assert settling.wait(10)
    resetter = threading.Thread(target=reset)
    resetter.start()
    # Let the settlement commit only once the reset is waiting for the period row lock.
    for _ in range(500):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                break
        threading.Event().wait(0.01)
    else:  # pragma: no cover
        pytest.fail("the reset never waited for the period row")
    go_on.set()
    settler.join(10), resetter.join(10)

    assert not errors
    period.refresh_from_db()
    assert period.spent_nanos == 1_250_000_000 == ledger_spend_nanos(budget, period_bounds(budget, NOW))


# --- the live status selector -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "thresholds", "status"),
    [
        (0, [50, 75, 90, 100], "ok"),
        (89_999, [50, 75, 90, 100], "ok"),
        (90_000, [50, 75, 90, 100], "warning"),
        (99_999, [50, 75, 90, 100], "warning"),
        (100_000, [50, 75, 90, 100], "exceeded"),
        (150_000, [], "exceeded"),
        (99_999, [100, 120], "ok"),
        (60_000, [60], "warning"),
    ],
)
def test_status_of(used, thresholds, status):
    assert status_of(limit_nanos=100_000, used_nanos=used, thresholds=thresholds) == status


def test_budgets_live_reads_period_rows_and_the_ledger_in_a_fixed_number_of_queries(
    organization, project, agent, django_assert_num_queries
):
    sprint = SprintFactory(project=project, slug="s1", start_date=dt.date(2026, 11, 2), end_date=dt.date(2026, 11, 15))
    other_agent = AgentFactory(project=project, name="writer")
    spend(agent, "6", request_id="a1", sprint=sprint)
    spend(agent, "3", request_id="a2", model="openai/gpt-4o-mini", sprint=sprint)
    spend(other_agent, "1", request_id="w1", sprint=sprint)
    spend(other_agent, None, request_id="w2-unpriced", sprint=sprint)
    spend(agent, "50", request_id="last-month", at=dt.datetime(2026, 10, 20, tzinfo=dt.UTC))
    b = {
        "org": budget_create(organization=organization, name="org", limit_usd=Decimal(100)),  # ok (10 of 100)
        "project": budget_create(organization=organization, project=project, name="p", limit_usd=Decimal(11)),
        "sprint": budget_create(organization=organization, sprint=sprint, name="s", limit_usd=Decimal(10)),
        "agent": budget_create(organization=organization, agent=agent, name="a", limit_usd=Decimal(9)),
        "model": budget_create(
            organization=organization, name="mini", limit_usd=Decimal(10), model_filter="gpt-4o-mini"
        ),
        "project-sprint": budget_create(
            organization=organization, project=project, name="ps", limit_usd=Decimal(20), period="sprint"
        ),
        "off": budget_create(organization=organization, name="off", limit_usd=Decimal(1), is_active=False),
        "over": budget_create(
            organization=organization,
            name="over",
            limit_usd=Decimal(1),
            period="custom",
            custom_start=TODAY - dt.timedelta(days=30),
            custom_end=TODAY - dt.timedelta(days=20),
        ),
    }
    # The agent budget has a live row, with a hold the ledger knows nothing about.
    period = current_period(b["agent"])
    BudgetPeriod.objects.filter(pk=period.pk).update(reserved_nanos=500_000_000)

    with django_assert_num_queries(4):  # budgets, sprints, periods, one ledger aggregate
        live = {item.budget.name: item for item in budgets_live(budgets=budget_queryset().order_by("pk"), now=NOW)}

    figures = {
        name: (item.spent_nanos, item.reserved_nanos, item.remaining_nanos, item.status) for name, item in live.items()
    }
    assert figures == {
        "org": (10_000_000_000, 0, 90_000_000_000, "ok"),
        "p": (10_000_000_000, 0, 1_000_000_000, "warning"),
        "s": (10_000_000_000, 0, 0, "exceeded"),
        "a": (9_000_000_000, 500_000_000, 0, "exceeded"),
        "mini": (3_000_000_000, 0, 7_000_000_000, "ok"),
        "ps": (10_000_000_000, 0, 10_000_000_000, "ok"),
        "off": (10_000_000_000, 0, 0, "inactive"),
        "over": (0, 0, 1_000_000_000, "inactive"),
    }
    assert (live["a"].has_period_row, live["org"].has_period_row) == (True, False)
    assert (live["ps"].period_start, live["ps"].period_end) == (
        dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 16, tzinfo=dt.UTC),
    )
    assert (live["over"].period_start, live["over"].period_end) == (None, None)
    # The one-query ledger sums agree with the reference implementation.
    for name in ("org", "p", "s", "mini", "ps"):
        budget = b[{"org": "org", "p": "project", "s": "sprint", "mini": "model", "ps": "project-sprint"}[name]]
        assert live[name].spent_nanos == ledger_spend_nanos(budget, period_bounds(budget, NOW))
    assert usd_to_nanos(live["a"].remaining_usd) == 0
