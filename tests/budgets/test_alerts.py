"""Threshold alerts: detected where spend is booked, recorded once per budget, period, threshold and
limit, with the budget's action run at 100 % (issue 5, "Detection").

gpt-4o at 2.5 / 10 USD per 1M tokens: a usage record of 1,000 prompt + 100 completion tokens costs
0.0025 + 0.001 = 0.0035 USD. A $0.014 daily budget is therefore 25 % per record: the 2nd record
reaches 50 %, the 3rd 75 %, the 4th 90 % and 100 %.
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.core import mail

from budgets.models import (
    AlertKind,
    AlertSeverity,
    AlertStatus,
    AuditAction,
    AuditEntry,
    Budget,
    BudgetAlert,
    BudgetPeriod,
)
from budgets.services.alerts import alerts_acknowledge, thresholds_cross, thresholds_crossed
from budgets.services.budgets import budget_update
from costs.models import Agent, AgentStatus
from costs.services.api_keys import api_key_create
from costs.services.ingest import usage_ingest
from tests.budgets.conftest import ledger_row, make_price
from tests.concurrency import run_together
from tests.costs.test_ingest import client_for

pytestmark = pytest.mark.django_db

DAY = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
RECORD_NANOS = 3_500_000


@pytest.fixture
def gpt4o(db):
    return make_price("gpt-4o", input="2.5", output="10")


@pytest.fixture
def budget(organization, project, gpt4o) -> Budget:
    return Budget.objects.create(
        organization=organization, project=project, name="search daily", limit_usd=Decimal("0.014"), period="daily"
    )


def record(n: int, *, day: str = "2026-11-02", **fields) -> dict:
    body = {
        "request_id": f"req-{day}-{n}",
        "agent": "planner",
        "model": "gpt-4o",
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "occurred_at": f"{day}T10:{n:02d}:00Z",
    }
    body.update(fields)
    return body


def alerts(**filters) -> list[tuple]:
    return list(
        BudgetAlert.objects.filter(**filters)
        .order_by("period_start", "threshold_percent", "limit_nanos")
        .values_list("kind", "threshold_percent", "severity", "spend_nanos", "limit_nanos")
    )


# --- the rule -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "crossed"),
    [
        (0, 49, []),
        (0, 50, [50]),  # reaching the threshold exactly crosses it
        (49, 51, [50]),
        (50, 60, []),  # already at 50 %: not again
        (10, 100, [50, 75, 90, 100]),
        (99, 150, [100]),
        (60, 40, []),  # spend going down crosses nothing
    ],
)
def test_thresholds_crossed_is_before_below_and_after_at_or_over(before, after, crossed):
    assert (
        thresholds_crossed(thresholds=[90, 50, 100, 75], before_nanos=before, after_nanos=after, limit_nanos=100)
        == crossed
    )


def test_thresholds_crossed_is_exact_on_limits_that_do_not_divide():
    # 50 % of 3 nano-USD is 1.5: 1 has not reached it, 2 has.
    assert thresholds_crossed(thresholds=[50], before_nanos=0, after_nanos=1, limit_nanos=3) == []
    assert thresholds_crossed(thresholds=[50], before_nanos=1, after_nanos=2, limit_nanos=3) == [50]


# --- through ingestion ----------------------------------------------------------------------------


def test_each_threshold_fires_once_as_usage_crosses_it(organization, project, agent, budget):
    client = client_for(organization=organization, project=project)

    seen = []
    for n in range(1, 6):
        with_callbacks = client.post("/api/v1/usage/", record(n), format="json")
        assert with_callbacks.status_code == 201
        seen.append([t for _, t, *_ in alerts()])

    assert seen == [[], [50], [50, 75], [50, 75, 90, 100], [50, 75, 90, 100]]
    limit = 14_000_000
    assert alerts() == [
        (AlertKind.THRESHOLD, 50, AlertSeverity.INFO, 2 * RECORD_NANOS, limit),
        (AlertKind.THRESHOLD, 75, AlertSeverity.WARNING, 3 * RECORD_NANOS, limit),
        (AlertKind.THRESHOLD, 90, AlertSeverity.WARNING, 4 * RECORD_NANOS, limit),
        (AlertKind.THRESHOLD, 100, AlertSeverity.CRITICAL, 4 * RECORD_NANOS, limit),
    ]
    alert = BudgetAlert.objects.get(threshold_percent=90)
    period = BudgetPeriod.objects.get(budget=budget)
    assert (alert.organization, alert.budget, alert.period) == (organization, budget, period)
    assert (alert.period_start, alert.period_end) == (DAY, DAY + dt.timedelta(days=1))
    assert alert.status == AlertStatus.OPEN
    assert alert.message == ("Project Search reached 90% of its daily budget 'search daily': $0.01 of $0.01 (100%).")


def test_a_replayed_request_records_nothing_new(organization, project, agent, budget):
    client = client_for(organization=organization, project=project)
    for n in (1, 2):
        client.post("/api/v1/usage/", record(n), format="json")

    replay = client.post("/api/v1/usage/", record(2), format="json")

    assert replay.status_code == 200
    assert alerts() == [(AlertKind.THRESHOLD, 50, AlertSeverity.INFO, 2 * RECORD_NANOS, 14_000_000)]


def test_a_batch_crossing_several_thresholds_records_each(organization, project, agent, budget):
    client = client_for(organization=organization, project=project)

    response = client.post("/api/v1/usage/", {"records": [record(n) for n in range(1, 4)]}, format="json")

    assert response.status_code == 201
    assert [t for _, t, *_ in alerts()] == [50, 75]
    assert {spend for *_, spend, _ in alerts()} == {3 * RECORD_NANOS}


def test_crossing_again_in_the_same_period_records_nothing(organization, project, agent, budget):
    """Spend released and re-booked (e.g. a reset that re-derived a lower figure) crosses 50 % again."""
    client = client_for(organization=organization, project=project)
    for n in (1, 2):
        client.post("/api/v1/usage/", record(n), format="json")
    period = BudgetPeriod.objects.get(budget=budget)

    assert thresholds_cross(budget=budget, period=period, before_nanos=0) == [50]

    assert BudgetAlert.objects.count() == 1


def test_a_new_period_rearms_the_thresholds(organization, project, agent, budget):
    client = client_for(organization=organization, project=project)
    for day in ("2026-11-02", "2026-11-03"):
        for n in (1, 2):
            assert client.post("/api/v1/usage/", record(n, day=day), format="json").status_code == 201

    assert list(BudgetAlert.objects.order_by("period_start").values_list("period_start", "threshold_percent")) == [
        (DAY, 50),
        (DAY + dt.timedelta(days=1), 50),
    ]


def test_a_changed_limit_rearms_the_thresholds_against_the_new_limit(organization, project, agent, budget):
    client = client_for(organization=organization, project=project)
    for n in (1, 2):
        client.post("/api/v1/usage/", record(n), format="json")  # 50 % of $0.014

    budget_update(budget=budget, data={"limit_usd": Decimal("0.0084")}, now=DAY + dt.timedelta(hours=11))

    # $0.007 of $0.0084 is 83 %: 50 and 75 fire again, against the new limit; 90 and 100 wait.
    assert alerts() == [
        (AlertKind.THRESHOLD, 50, AlertSeverity.INFO, 2 * RECORD_NANOS, 8_400_000),
        (AlertKind.THRESHOLD, 50, AlertSeverity.INFO, 2 * RECORD_NANOS, 14_000_000),
        (AlertKind.THRESHOLD, 75, AlertSeverity.WARNING, 2 * RECORD_NANOS, 8_400_000),
    ]
    client.post("/api/v1/usage/", record(3), format="json")
    assert [(t, limit) for _, t, _, _, limit in alerts(limit_nanos=8_400_000)] == [
        (50, 8_400_000),
        (75, 8_400_000),
        (90, 8_400_000),
        (100, 8_400_000),
    ]


def test_a_budget_added_mid_period_alerts_on_the_spend_it_starts_with(organization, project, agent, gpt4o):
    for minute in range(3):  # $0.0105 already spent today, before the budget existed
        ledger_row(agent=agent, cost_usd="0.0035", occurred_at=DAY + dt.timedelta(hours=9, minutes=minute))
    budget = Budget.objects.create(
        organization=organization, project=project, name="late", limit_usd=Decimal("0.014"), period="daily"
    )

    client = client_for(organization=organization, project=project)
    assert client.post("/api/v1/usage/", record(1), format="json").status_code == 201

    # The period was created from the ledger (4 records: 100 %): every threshold fires, once.
    assert [t for _, t, *_ in alerts(budget=budget)] == [50, 75, 90, 100]


def test_a_soft_budget_and_an_org_budget_alert_alike(organization, project, agent, gpt4o):
    soft = Budget.objects.create(
        organization=organization, name="org soft", limit_usd=Decimal("0.007"), period="daily", enforcement="soft"
    )
    client = client_for(organization=organization, project=project)

    client.post("/api/v1/usage/", record(1), format="json")

    assert [t for _, t, *_ in alerts(budget=soft)] == [50]
    assert BudgetAlert.objects.get().message == (
        "Organization Acme reached 50% of its daily budget 'org soft': $0.0035 of $0.007 (50%)."
    )


def test_unpriced_usage_crosses_nothing(organization, project, agent, budget):
    client = client_for(organization=organization, project=project)

    client.post("/api/v1/usage/", record(1, model="no-such-model"), format="json")

    assert not BudgetAlert.objects.exists()


def test_the_alert_is_emailed_after_commit(organization, project, agent, budget, django_capture_on_commit_callbacks):
    organization.alert_emails = "oncall@example.com"
    organization.save()
    client = client_for(organization=organization, project=project)
    client.post("/api/v1/usage/", record(1), format="json")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        client.post("/api/v1/usage/", record(2), format="json")

    assert len(callbacks) == 2  # the alert's delivery, and recommendations for the budget's scope
    [message] = mail.outbox
    assert message.to == ["oncall@example.com"]
    assert message.subject == "[Spendguard] Project Search reached 50% of its daily budget"


# --- actions --------------------------------------------------------------------------------------


def test_a_pause_agent_budget_pauses_its_agent_when_spend_reaches_the_limit(organization, project, agent, gpt4o):
    budget = Budget.objects.create(
        organization=organization,
        agent=agent,
        name="planner daily",
        limit_usd=Decimal("0.007"),
        period="daily",
        enforcement="soft",
        action="pause_agent",
        thresholds=[75],
    )
    client = client_for(organization=organization, project=project)

    client.post("/api/v1/usage/", record(1), format="json")
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.ACTIVE
    client.post("/api/v1/usage/", record(2), format="json")
    client.post("/api/v1/usage/", record(3), format="json")

    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PAUSED
    # 75 is the only alert threshold; 100 ran the action without an alert of its own.
    assert [t for _, t, *_ in alerts()] == [75]
    [entry] = AuditEntry.objects.filter(action=AuditAction.AGENT_PAUSED)
    assert (entry.budget, entry.agent, entry.actor_label) == (
        budget,
        agent,
        f"system (budget {budget.pk} reached 100%)",
    )
    assert entry.changes == {
        "status": ["active", "paused"],
        "reason": "budget_limit_reached",
        "budget": budget.pk,
        "period_start": "2026-11-02T00:00:00+00:00",
        "spent_usd": "0.007",
        "limit_usd": "0.007",
    }
    check = client.post(
        "/api/v1/budget-checks/",
        {"agent": "planner", "model": "gpt-4o", "prompt_tokens": 1, "max_output_tokens": 1},
        format="json",
    )
    assert (check.status_code, check.json()["error"]["code"]) == (429, "agent_paused")


def test_a_downgrade_budget_switches_its_agent_to_the_cheaper_model(organization, project, agent, gpt4o):
    make_price("gpt-4o-mini", input="0.15", output="0.6")
    budget = Budget.objects.create(
        organization=organization,
        agent=agent,
        name="planner daily",
        limit_usd=Decimal("0.007"),
        period="daily",
        enforcement="soft",
        action="downgrade",
        downgrade_model="gpt-4o-mini",
    )
    client = client_for(organization=organization, project=project)

    for n in (1, 2, 3):
        client.post("/api/v1/usage/", record(n), format="json")

    assert Agent.objects.get(pk=agent.pk).model_override == "gpt-4o-mini"
    assert list(AuditEntry.objects.filter(action=AuditAction.MODEL_DOWNGRADED).values_list("budget", "changes")) == [
        (
            budget.pk,
            {
                "model_override": ["", "gpt-4o-mini"],
                "reason": "budget_limit_reached",
                "budget": budget.pk,
                "period_start": "2026-11-02T00:00:00+00:00",
                "spent_usd": "0.007",
                "limit_usd": "0.007",
            },
        )
    ]


# --- operators ------------------------------------------------------------------------------------


def test_acknowledging_keeps_the_alert_listed_with_who_and_when(organization, project, agent, budget, admin_user):
    client = client_for(organization=organization, project=project)
    for n in (1, 2):
        client.post("/api/v1/usage/", record(n), format="json")
    when = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)

    changed = alerts_acknowledge(alerts=BudgetAlert.objects.all(), actor=admin_user, now=when)
    again = alerts_acknowledge(alerts=BudgetAlert.objects.all(), actor=admin_user, now=when)

    assert len(changed) == 1 and again == []
    alert = BudgetAlert.objects.get()
    assert (alert.status, alert.acknowledged_by, alert.acknowledged_at) == ("acknowledged", admin_user, when)
    [entry] = AuditEntry.objects.filter(action=AuditAction.ALERT_ACKNOWLEDGED)
    assert entry.changes == {"alert": alert.pk, "status": {"old": "open", "new": "acknowledged"}}


# --- concurrency ----------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_ingestion_records_exactly_one_alert_per_threshold(organization, project, agent, gpt4o):
    threads = 16
    # 8 records reach the limit; 16 racing records cross every threshold, each exactly once.
    budget = Budget.objects.create(
        organization=organization, project=project, name="race", limit_usd=Decimal("0.028"), period="daily"
    )
    keys = [api_key_create(organization=organization, project=project, name=f"k{i}")[0] for i in range(threads)]
    now = DAY + dt.timedelta(hours=12)

    def work(t: int) -> int:
        return len(usage_ingest(api_key=keys[t], records=[record(t)], now=now))

    assert run_together([lambda t=t: work(t) for t in range(threads)]) == [1] * threads

    assert [t for _, t, *_ in alerts(budget=budget)] == [50, 75, 90, 100]
    period = BudgetPeriod.objects.get(budget=budget)
    assert period.spent_nanos == threads * RECORD_NANOS
    # Each alert holds the spend right after the booking that crossed it: the first at or over it.
    for _, threshold, _, spend, limit in alerts(budget=budget):
        assert spend * 100 >= threshold * limit > (spend - RECORD_NANOS) * 100
