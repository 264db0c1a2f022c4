"""Settlement of ingested usage against budgets (the ingest hook), through ``usage_ingest`` and the API.

gpt-4o is priced at 2.5 / 10 USD per 1M input / output tokens, so the default usage record
(100 prompt + 10 completion tokens) costs 0.00035 USD = 350,000 nano-USD, and 1000 + 100 tokens
cost 0.0035 USD = 3,500,000 nano-USD. Reservations are made here directly (rows + counter bump), so
these tests do not depend on the pre-call check.
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from budgets.models import (
    Budget,
    BudgetPeriod,
    Reservation,
    ReservationHold,
    ReservationStatus,
    usd_to_nanos,
)
from budgets.services.periods import ledger_spend_nanos, period_bounds, period_ensure
from costs.models import UsageRecord
from costs.services.api_keys import api_key_create
from costs.services.ingest import usage_ingest
from tests.concurrency import run_together
from tests.costs.test_ingest import client_for, make_price, usage
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory, SprintFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
AT = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)  # occurred_at of usage() records
DAY = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
SMALL = 350_000  # nano-USD of the default usage() record
LARGE = 3_500_000  # nano-USD of 1000 prompt + 100 completion tokens


# --- helpers (shared with test_maintenance) ----------------------------------------------------


def make_budget(organization, name: str, **fields) -> Budget:
    fields.setdefault("limit_usd", Decimal("100"))
    fields.setdefault("period", "daily")
    return Budget.objects.create(organization=organization, name=name, **fields)


def hold(
    *,
    agent,
    budgets: list[Budget],
    amount_usd: str = "0.01",
    request_id: str = "",
    at: dt.datetime = AT,
    expires_at: dt.datetime | None = None,
) -> Reservation:
    """A held reservation of ``amount_usd`` against the periods of ``budgets`` containing ``at``,
    made the way the pre-call check makes one: reservation, holds, ``reserved_nanos`` bumped."""
    nanos = usd_to_nanos(Decimal(amount_usd))
    reservation = Reservation.objects.create(
        organization=agent.project.organization,
        project=agent.project,
        agent=agent,
        request_id=request_id,
        model="gpt-4o",
        amount_nanos=nanos,
        expires_at=expires_at or at + dt.timedelta(minutes=10),
    )
    for budget in budgets:
        period, _ = period_ensure(budget, period_bounds(budget, at))
        ReservationHold.objects.create(reservation=reservation, period=period, amount_nanos=nanos)
        BudgetPeriod.objects.filter(pk=period.pk).update(reserved_nanos=F("reserved_nanos") + nanos)
    return reservation


def counters(budget: Budget) -> list[tuple[dt.datetime, int, int]]:
    """``(starts_at, spent_nanos, reserved_nanos)`` of every period of ``budget``, oldest first."""
    return list(budget.periods.order_by("starts_at").values_list("starts_at", "spent_nanos", "reserved_nanos"))


def ledger(budget: Budget, at: dt.datetime = AT) -> int:
    return ledger_spend_nanos(budget, period_bounds(budget, at))


@pytest.fixture
def gpt4o(db):
    return make_price("gpt-4o", input="2.5", output="10")


@pytest.fixture
def api_key(organization, project):
    key, _ = api_key_create(organization=organization, project=project, name="settle")
    return key


def ingest(api_key, *records: dict) -> list:
    return usage_ingest(api_key=api_key, records=list(records), now=NOW)


# --- reservations -------------------------------------------------------------------------------


def test_usage_with_reservation_id_settles_it(organization, project, agent, api_key, gpt4o):
    agent_budget = make_budget(organization, "agent daily", agent=agent)
    org_budget = make_budget(organization, "org monthly", period="monthly")
    reservation = hold(agent=agent, budgets=[agent_budget, org_budget], amount_usd="0.01")
    other = hold(agent=agent, budgets=[agent_budget], amount_usd="0.002")
    assert counters(agent_budget) == [(DAY, 0, 12_000_000)]

    ingest(
        api_key,
        usage(
            request_id="call-1",
            agent="planner",
            prompt_tokens=1000,
            completion_tokens=100,
            reservation_id=str(reservation.id),
        ),
    )

    # The hold left reserved, the actual cost joined spent; the other reservation is untouched.
    assert counters(agent_budget) == [(DAY, LARGE, 2_000_000)]
    assert counters(org_budget) == [(dt.datetime(2026, 11, 1, tzinfo=dt.UTC), LARGE, 0)]
    reservation.refresh_from_db()
    assert reservation.status == ReservationStatus.SETTLED
    assert reservation.closed_at is not None
    assert Reservation.objects.get(pk=other.pk).status == ReservationStatus.HELD
    assert ledger(agent_budget) == LARGE


def test_usage_with_only_a_matching_request_id_settles_it(organization, project, agent, api_key, gpt4o):
    budget = make_budget(organization, "agent daily", agent=agent)
    reservation = hold(agent=agent, budgets=[budget], amount_usd="0.01", request_id="call-7")
    hold(agent=agent, budgets=[budget], amount_usd="0.004", request_id="call-8")

    ingest(api_key, usage(request_id="call-7", agent="planner"))

    assert counters(budget) == [(DAY, SMALL, 4_000_000)]
    assert Reservation.objects.get(pk=reservation.pk).status == ReservationStatus.SETTLED
    assert Reservation.objects.get(request_id="call-8").status == ReservationStatus.HELD


def test_a_named_reservation_wins_over_a_matching_request_id(organization, project, agent, api_key, gpt4o):
    budget = make_budget(organization, "agent daily", agent=agent)
    named = hold(agent=agent, budgets=[budget], amount_usd="0.01")
    same_request = hold(agent=agent, budgets=[budget], amount_usd="0.004", request_id="call-1")

    ingest(api_key, usage(request_id="call-1", agent="planner", reservation_id=str(named.id)))

    assert counters(budget) == [(DAY, SMALL, 4_000_000)]
    assert Reservation.objects.get(pk=named.pk).status == ReservationStatus.SETTLED
    assert Reservation.objects.get(pk=same_request.pk).status == ReservationStatus.HELD


def test_usage_cannot_settle_another_organizations_reservation(organization, project, agent, api_key, gpt4o):
    other_org = OrganizationFactory(slug="globex")
    other_agent = AgentFactory(project=ProjectFactory(organization=other_org, slug="x"), name="spy")
    other_budget = make_budget(other_org, "their budget", agent=other_agent)
    by_id = hold(agent=other_agent, budgets=[other_budget], amount_usd="0.01")
    hold(agent=other_agent, budgets=[other_budget], amount_usd="0.002", request_id="shared-id")

    ingest(
        api_key,
        usage(request_id="mine-1", agent="planner", reservation_id=str(by_id.id)),
        usage(request_id="shared-id", agent="planner"),
    )

    assert counters(other_budget) == [(DAY, 0, 12_000_000)]
    assert set(Reservation.objects.values_list("status", flat=True)) == {ReservationStatus.HELD}


def test_a_replayed_usage_record_changes_nothing(organization, project, agent, api_key, gpt4o):
    budget = make_budget(organization, "agent daily", agent=agent)
    reservation = hold(agent=agent, budgets=[budget], amount_usd="0.01", request_id="call-1")
    record = usage(request_id="call-1", agent="planner")
    ingest(api_key, record)
    assert counters(budget) == [(DAY, SMALL, 0)]
    # A new check for the same request id is impossible (unique), but another held reservation
    # must not be touched by the replay either.
    other = hold(agent=agent, budgets=[budget], amount_usd="0.002")

    [replay] = ingest(api_key, record | {"reservation_id": str(other.id)})

    assert replay.replayed is True
    assert counters(budget) == [(DAY, SMALL, 2_000_000)]
    assert Reservation.objects.get(pk=reservation.pk).status == ReservationStatus.SETTLED
    assert Reservation.objects.get(pk=other.pk).status == ReservationStatus.HELD
    assert UsageRecord.objects.count() == 1


def test_settling_an_expired_reservation_books_the_spend_but_not_the_hold_twice(
    organization, project, agent, api_key, gpt4o
):
    from budgets.services.maintenance import reservations_expire

    budget = make_budget(organization, "agent daily", agent=agent)
    late = hold(agent=agent, budgets=[budget], amount_usd="0.01", expires_at=AT)
    hold(agent=agent, budgets=[budget], amount_usd="0.002", expires_at=NOW + dt.timedelta(hours=1))
    assert reservations_expire(now=NOW) == 1
    assert counters(budget) == [(DAY, 0, 2_000_000)]

    ingest(api_key, usage(request_id="late", agent="planner", reservation_id=str(late.id)))

    assert counters(budget) == [(DAY, SMALL, 2_000_000)]
    assert Reservation.objects.get(pk=late.pk).status == ReservationStatus.EXPIRED


def test_unpriced_usage_releases_its_reservation_and_adds_nothing(organization, project, agent, api_key, gpt4o):
    budget = make_budget(organization, "agent daily", agent=agent)
    reservation = hold(agent=agent, budgets=[budget], amount_usd="0.01")

    [item] = ingest(api_key, usage(agent="planner", model="no-such-model", reservation_id=str(reservation.id)))

    assert item.row.cost_source == "unpriced"
    assert counters(budget) == [(DAY, 0, 0)]
    assert Reservation.objects.get(pk=reservation.pk).status == ReservationStatus.SETTLED


# --- spend against covering budgets -----------------------------------------------------------


def test_usage_without_a_check_counts_against_every_covering_budget(organization, project, agent, api_key, gpt4o):
    make_price("claude-x", input="3", output="15")
    sprint = SprintFactory(project=project, slug="s1")  # 2026-11-01 .. 2026-11-14
    other_project = ProjectFactory(organization=organization, slug="other")
    other_agent = AgentFactory(project=project, name="other-agent")
    budgets = {
        "org": make_budget(organization, "org"),
        "project": make_budget(organization, "project", project=project, period="monthly"),
        "project per sprint": make_budget(organization, "project per sprint", project=project, period="sprint"),
        "sprint": make_budget(organization, "sprint", sprint=sprint, period="total"),
        "agent": make_budget(organization, "agent", agent=agent, period="weekly"),
        "agent gpt-4o only": make_budget(organization, "agent gpt-4o only", agent=agent, model_filter="gpt-4o"),
        "agent claude only": make_budget(organization, "agent claude only", agent=agent, model_filter="claude-x"),
        "other project": make_budget(organization, "other project", project=other_project),
        "other agent": make_budget(organization, "other agent", agent=other_agent),
        "inactive": make_budget(organization, "inactive", agent=agent, is_active=False),
        "custom, over": make_budget(
            organization,
            "custom, over",
            period="custom",
            custom_start=dt.datetime(2026, 10, 1, tzinfo=dt.UTC),
            custom_end=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
        ),
    }

    ingest(
        api_key,
        usage(request_id="a", agent="planner", prompt_tokens=1000, completion_tokens=100),
        usage(request_id="b", agent="planner", model="openai/gpt-4o"),
        usage(request_id="c", agent="planner", model="claude-x"),  # 0.00045 USD
    )

    spent = {name: [(s, r) for _, s, r in counters(budget)] for name, budget in budgets.items()}
    everything = LARGE + SMALL + 450_000
    assert spent == {
        "org": [(everything, 0)],
        "project": [(everything, 0)],
        "project per sprint": [(everything, 0)],
        "sprint": [(everything, 0)],
        "agent": [(everything, 0)],
        "agent gpt-4o only": [(LARGE + SMALL, 0)],
        "agent claude only": [(450_000, 0)],
        "other project": [],
        "other agent": [],
        "inactive": [],
        "custom, over": [],
    }
    for name in ("org", "project", "project per sprint", "sprint", "agent", "agent gpt-4o only", "agent claude only"):
        assert ledger(budgets[name]) == spent[name][0][0], name
    assert counters(budgets["project per sprint"])[0][0] == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def test_a_batch_spanning_two_periods_of_a_daily_budget(organization, project, agent, api_key, gpt4o):
    # Berlin is UTC+1 in November: the local day changes at 23:00 UTC.
    budget = make_budget(organization, "agent daily Berlin", agent=agent, timezone="Europe/Berlin")
    ingest(
        api_key,
        usage(request_id="before-1", agent="planner", occurred_at="2026-11-01T22:59:59Z"),
        usage(request_id="after-1", agent="planner", occurred_at="2026-11-01T23:00:00Z"),
        usage(request_id="after-2", agent="planner", occurred_at="2026-11-02T10:00:00Z", prompt_tokens=1000),
    )

    first, second = dt.datetime(2026, 10, 31, 23, tzinfo=dt.UTC), dt.datetime(2026, 11, 1, 23, tzinfo=dt.UTC)
    after = SMALL + 2_600_000  # 1000 prompt + 10 completion tokens
    assert counters(budget) == [(first, SMALL, 0), (second, after, 0)]
    assert budget.periods.get(starts_at=second).ends_at == dt.datetime(2026, 11, 2, 23, tzinfo=dt.UTC)

    # Spend added to periods that already existed, on both sides of the boundary.
    ingest(
        api_key,
        usage(request_id="before-2", agent="planner", occurred_at="2026-11-01T12:00:00+01:00"),
        usage(request_id="after-3", agent="planner", occurred_at="2026-11-02T00:30:00+01:00"),
    )
    assert counters(budget) == [(first, 2 * SMALL, 0), (second, after + SMALL, 0)]
    assert ledger(budget, first) == 2 * SMALL
    assert ledger(budget, second) == after + SMALL


def test_a_budget_added_after_usage_existed_counts_it_once(organization, project, agent, api_key, gpt4o):
    ingest(api_key, usage(request_id="before-budget", agent="planner", prompt_tokens=1000, completion_tokens=100))
    budget = make_budget(organization, "agent daily", agent=agent)

    # The period is created inside this ingest transaction, initialised from the ledger, which
    # already holds both the old row and the two new ones: nothing may be added on top.
    ingest(
        api_key,
        usage(request_id="after-1", agent="planner"),
        usage(request_id="after-2", agent="planner"),
    )

    assert counters(budget) == [(DAY, LARGE + 2 * SMALL, 0)]
    assert ledger(budget) == LARGE + 2 * SMALL

    ingest(api_key, usage(request_id="after-3", agent="planner"))
    assert counters(budget) == [(DAY, LARGE + 3 * SMALL, 0)]


def test_rounding_is_per_row_half_up_like_the_ledger_sum(organization, project, agent, api_key, db):
    # 0.0015 USD per 1M tokens: one token costs 0.0000000015 USD = 1.5 nano-USD, booked as 2 per
    # row (half-up), exactly what the ledger sum says (3 x 2), not round(3 x 1.5) = 5.
    make_price("micro", input="0.0015", output="0")
    budget = make_budget(organization, "agent daily", agent=agent)

    ingest(
        api_key,
        *(
            usage(request_id=f"m{i}", agent="planner", model="micro", prompt_tokens=1, completion_tokens=0)
            for i in range(3)
        ),
    )

    assert counters(budget) == [(DAY, 6, 0)]
    assert ledger(budget) == 6


def test_settlement_over_http_end_to_end(organization, project, agent, gpt4o):
    budget = make_budget(organization, "agent daily", agent=agent, limit_usd=Decimal("1"))
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    reservation = hold(agent=agent, budgets=[budget], amount_usd="0.01", at=at)
    client = client_for(organization=organization, project=project, agent=agent)

    response = client.post(
        "/api/v1/usage/",
        {
            "request_id": "http-1",
            "model": "gpt-4o",
            "prompt_tokens": 1000,
            "completion_tokens": 100,
            "reservation_id": str(reservation.id),
            "occurred_at": at.isoformat(),
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    assert response.json()["cost_usd"] == "0.0035"
    assert [(s, r) for _, s, r in counters(budget)] == [(LARGE, 0)]
    assert Reservation.objects.get(pk=reservation.pk).status == ReservationStatus.SETTLED


def test_a_budget_check_then_its_usage_over_http(organization, project, agent, gpt4o):
    """The whole flow: the pre-call check reserves the worst case, the usage settles it."""
    budget = make_budget(organization, "agent daily", agent=agent, limit_usd=Decimal("1"))
    client = client_for(organization=organization, project=project, agent=agent)

    check = client.post(
        "/api/v1/budget-checks/",
        {"model": "gpt-4o", "prompt_tokens": 1000, "max_output_tokens": 100, "request_id": "flow-1"},
        format="json",
    )
    assert check.status_code < 300, check.content
    assert (check.json()["decision"], check.json()["reserved_usd"]) == ("allow", "0.0035")
    assert [(s, r) for _, s, r in counters(budget)] == [(0, LARGE)]

    usage_response = client.post(
        "/api/v1/usage/",
        {"request_id": "flow-1", "model": "gpt-4o", "prompt_tokens": 500, "completion_tokens": 50},
        format="json",
    )

    assert usage_response.status_code == 201, usage_response.content
    assert [(s, r) for _, s, r in counters(budget)] == [(1_750_000, 0)]
    reservation = Reservation.objects.get(pk=check.json()["reservation_id"])
    assert reservation.status == ReservationStatus.SETTLED


def test_a_failing_settlement_rolls_the_ledger_write_back(organization, project, agent, api_key, gpt4o, monkeypatch):
    from budgets.services import settlement

    budget = make_budget(organization, "agent daily", agent=agent)
    reservation = hold(agent=agent, budgets=[budget], amount_usd="0.01")

    def broken(*args, **kwargs):
        raise RuntimeError("store down")

    monkeypatch.setattr(settlement, "_apply", broken)
    with pytest.raises(RuntimeError):
        ingest(api_key, usage(agent="planner", reservation_id=str(reservation.id)))

    assert not UsageRecord.objects.exists()
    assert counters(budget) == [(DAY, 0, 10_000_000)]
    assert Reservation.objects.get(pk=reservation.pk).status == ReservationStatus.HELD


# --- cost per batch -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_batch_costs_a_bounded_number_of_queries(organization, project, agent, api_key, gpt4o):
    SprintFactory(project=project, slug="s1")
    for name, fields in {
        "org": {},
        "project monthly": {"project": project, "period": "monthly"},
        "project per sprint": {"project": project, "period": "sprint"},
        "agent": {"agent": agent},
        "agent gpt-4o": {"agent": agent, "model_filter": "gpt-4o"},
    }.items():
        make_budget(organization, name, **fields)
    budgets = list(Budget.objects.all())

    def batch(size: int, prefix: str) -> list[dict]:
        return [
            usage(request_id=f"{prefix}-{i}", agent="planner", model=["gpt-4o", "openai/gpt-4o"][i % 2])
            for i in range(size)
        ]

    ingest(api_key, *batch(5, "warm"))  # creates the periods
    reservations = [
        hold(agent=agent, budgets=budgets, amount_usd="0.001", request_id=f"{prefix}-{i}")
        for prefix, count in (("small", 2), ("big", 20))
        for i in range(count)
    ]

    with CaptureQueriesContext(connection) as small:
        ingest(api_key, *batch(60, "small"))
    with CaptureQueriesContext(connection) as large:
        ingest(api_key, *batch(1000, "big"))

    # Ingest's own 8, then: flip, holds, budgets, the sprint-period budget's relations, sprints,
    # periods, one UPDATE per period (5).
    assert len(small.captured_queries) == len(large.captured_queries) == 8 + 6 + 5
    updates = [q["sql"] for q in large.captured_queries if q["sql"].startswith("UPDATE budgets_budgetperiod")]
    assert len(updates) == 5
    assert Reservation.objects.filter(pk__in=[r.pk for r in reservations], status="settled").count() == 22
    for budget in budgets:
        [(_, spent, reserved)] = counters(budget)
        assert (spent, reserved) == (ledger(budget), 0), budget.name
    assert counters(budgets[0])[0][1] == 1065 * SMALL


# --- concurrency --------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("periods_exist", [False, True], ids=["periods-created-in-the-race", "periods-exist"])
def test_concurrent_batches_for_one_agent_book_exactly_the_ledger(organization, project, agent, gpt4o, periods_exist):
    threads, per_batch = 8, 40
    budgets = [
        make_budget(organization, "org"),
        make_budget(organization, "project", project=project, period="monthly"),
        make_budget(organization, "agent", agent=agent),
        make_budget(organization, "agent Berlin", agent=agent, timezone="Europe/Berlin"),
    ]
    keys = [api_key_create(organization=organization, project=project, name=f"k{i}")[0] for i in range(threads)]
    reservations = {}
    if periods_exist:
        for t in range(threads):
            for i in range(0, per_batch, 4):
                reservations[f"t{t}-{i}"] = hold(
                    agent=agent, budgets=budgets, amount_usd="0.001", request_id=f"t{t}-{i}"
                )

    def work(t: int) -> int:
        batch = [
            usage(
                request_id=f"t{t}-{i}",
                agent="planner",
                prompt_tokens=100 + i,
                completion_tokens=10 + t,
                # Both sides of the Berlin day boundary (23:00 UTC).
                occurred_at=f"2026-11-02T{22 + i % 2}:{i:02d}:00Z",
            )
            for i in range(per_batch)
        ]
        return len(usage_ingest(api_key=keys[t], records=batch, now=dt.datetime(2026, 11, 3, tzinfo=dt.UTC)))

    assert run_together([lambda t=t: work(t) for t in range(threads)]) == [per_batch] * threads

    assert UsageRecord.objects.count() == threads * per_batch
    total = sum(usd_to_nanos(row.cost_usd) for row in UsageRecord.objects.all())
    for budget in budgets:
        periods = counters(budget)
        assert periods, budget.name
        for starts_at, spent, reserved in periods:
            assert spent == ledger(budget, starts_at), (budget.name, starts_at)
            assert reserved == 0
        assert sum(spent for _, spent, _ in periods) == total
    assert len(counters(budgets[3])) == 2
    assert not Reservation.objects.filter(status="held").exists()
    assert Reservation.objects.filter(status="settled").count() == len(reservations)
