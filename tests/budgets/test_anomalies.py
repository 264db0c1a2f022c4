"""Anomaly alerts: an agent's or project's spend in the current (or just-completed) hour or local day
against its own baseline — median + max(6 x MAD, $1, 1 x median) of the same hour on the previous
14 days / the previous 14 days — once per window, never for a subject with under 7 windows of history.

Traffic is seeded (``random.Random``) cents, so every run writes the same ledger; the spiking
agent's history is hand-picked so that its median and MAD are round numbers.
"""

import datetime as dt
import random
import uuid
from decimal import Decimal

import pytest
from freezegun import freeze_time

from budgets.models import AlertKind, AlertSeverity, AnomalyWindow, BudgetAlert
from budgets.services.anomalies import spend_anomalies_detect, spend_cutoff
from costs.models import CostSource, UsageRecord
from tests.concurrency import run_together
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory

pytestmark = pytest.mark.django_db

UTC = dt.UTC
USD = 1_000_000_000
NOW = dt.datetime(2026, 11, 20, 14, 30, tzinfo=UTC)  # a Friday
HOUR = dt.datetime(2026, 11, 20, 14, tzinfo=UTC)
WORK_HOURS = range(9, 17)  # UTC hours with traffic
HISTORY_DAYS = 15


def usage_rows(rows: list[tuple]) -> None:
    """Ledger rows ``(agent, occurred_at, cost_usd)`` in one insert (the ledger is append-only:
    this writes, never changes, as tests.budgets.conftest.ledger_row does one at a time)."""
    UsageRecord.objects.bulk_create(
        UsageRecord(
            organization=agent.project.organization,
            project=agent.project,
            agent=agent,
            request_id=f"ledger-{uuid.uuid4().hex}",
            model="gpt-4o",
            prompt_tokens=100,
            completion_tokens=10,
            occurred_at=at,
            cost_usd=Decimal(cost),
            cost_source=CostSource.COMPUTED,
        )
        for agent, at, cost in rows
    )


def noisy_traffic(rng: random.Random, agent, mean_cents: int, *, days: int = HISTORY_DAYS, until=NOW) -> list[tuple]:
    """One row per work hour over the previous ``days`` days and today up to ``until``, each
    uniformly within +-50 % of ``mean_cents``."""
    rows = []
    for day in range(days, -1, -1):
        for hour in WORK_HOURS:
            at = (HOUR - dt.timedelta(days=day)).replace(hour=hour, minute=10)
            if at < until:
                rows.append((agent, at, Decimal(rng.randint(mean_cents // 2, mean_cents * 3 // 2)) / 100))
    return rows


def anomalies() -> list[tuple]:
    return sorted(
        (
            "agent" if alert.agent_id else "project",
            (alert.agent or alert.project).name,
            alert.window,
            alert.window_start,
            alert.spend_nanos,
            alert.baseline_nanos,
            alert.cutoff_nanos,
        )
        for alert in BudgetAlert.objects.filter(kind=AlertKind.ANOMALY).select_related("agent", "project")
    )


@pytest.fixture
def search(organization):
    return ProjectFactory(organization=organization, name="Search", slug="search")


@pytest.fixture
def normal_traffic(search):
    """Two busy agents ($10 an hour, +-50 %) in Search and one ($3) in Ops, seeded."""
    rng = random.Random(20261120)
    ops = ProjectFactory(organization=search.organization, name="Ops", slug="ops")
    agents = [
        AgentFactory(project=search, name="writer"),
        AgentFactory(project=search, name="reviewer"),
        AgentFactory(project=ops, name="cron"),
    ]
    usage_rows(noisy_traffic(rng, agents[0], 1000) + noisy_traffic(rng, agents[1], 1000))
    usage_rows(noisy_traffic(rng, agents[2], 300))
    return agents


# The planner's 14:00 hour on each of the previous 14 days: median $2.00, MAD $0.50, so its cutoff is
# 2 + max(6 x 0.50, 1, 2) = $5.00.
PLANNER_14H_CENTS = [200, 250, 150, 300, 100, 200, 250, 150, 200, 250, 150, 200, 300, 100]


def planner_history(rng: random.Random, planner) -> list[tuple]:
    rows = [row for row in noisy_traffic(rng, planner, 200, until=HOUR) if row[1].hour != 14]
    for day, cents in enumerate(PLANNER_14H_CENTS, start=1):
        rows.append((planner, HOUR - dt.timedelta(days=day) + dt.timedelta(minutes=10), Decimal(cents) / 100))
    # 15 days ago: outside the 14:00 baseline, inside the previous day's.
    rows.append((planner, HOUR - dt.timedelta(days=15) + dt.timedelta(minutes=10), Decimal("2.00")))
    return rows


# --- the statistic (pure) ---------------------------------------------------------------------------


def test_cutoff_is_median_plus_the_largest_of_k_mad_the_floor_and_the_median():
    # Wide spread: 6 x MAD wins.
    wide = spend_cutoff([c * 10_000_000 for c in PLANNER_14H_CENTS])
    assert (wide.median_nanos, wide.mad_nanos, wide.cutoff_nanos) == (2 * USD, USD // 2, 5 * USD)
    # A very regular $10 an hour (MAD $0.05, 6 x MAD $0.30): spend must at least double.
    steady = spend_cutoff([10 * USD + d for d in (0, 50_000_000, -50_000_000, 0, 0, 50_000_000, -50_000_000)])
    assert (steady.median_nanos, steady.mad_nanos, steady.cutoff_nanos) == (10 * USD, 50_000_000, 20 * USD)
    # Idle most of the time (median 0, MAD 0): the $1 floor.
    idle = spend_cutoff([0, 0, 0, 0, 0, 0, 0, 5 * USD])
    assert (idle.median_nanos, idle.mad_nanos, idle.cutoff_nanos) == (0, 0, USD)


def test_cutoff_is_exact_in_nano_dollars_and_rounds_half_up():
    # Median of 1 and 2 nanos is 1.5 (-> 2), MAD 0.5 (-> 1); cutoff 1.5 + $1 -> 1,000,000,002 (half-up).
    cutoff = spend_cutoff([1, 2])
    assert (cutoff.median_nanos, cutoff.mad_nanos, cutoff.cutoff_nanos) == (2, 1, USD + 2)
    assert spend_cutoff([1, 2], k=6, min_excess_nanos=0, min_ratio=1).cutoff_nanos == 5  # 1.5 + 3 = 4.5 -> 5


# --- the job ----------------------------------------------------------------------------------------


def test_a_spike_flags_that_agent_only(search, normal_traffic):
    planner = AgentFactory(project=search, name="planner")
    rng = random.Random(7)
    usage_rows(planner_history(rng, planner))
    # Today 14:10 a usual $2.00, then a runaway loop: $6 more by 14:25 -> $8.00 this hour.
    usage_rows(
        [(planner, HOUR + dt.timedelta(minutes=10), "2.00")]
        + [(planner, HOUR + dt.timedelta(minutes=20 + m), "1.20") for m in range(5)]
    )

    with freeze_time(NOW):
        assert spend_anomalies_detect() == 1

    assert anomalies() == [("agent", "planner", AnomalyWindow.HOUR, HOUR, 8 * USD, 2 * USD, 5 * USD)]
    alert = BudgetAlert.objects.get(kind=AlertKind.ANOMALY)
    assert (alert.organization_id, alert.project_id, alert.severity, alert.fired_at) == (
        search.organization_id,
        None,
        AlertSeverity.WARNING,
        NOW,
    )
    assert alert.message == (
        "Agent planner (project Search) spent $8.00 in the hour from 2026-11-20 14:00 UTC,"
        " far above its usual $2.00 (anomaly cutoff $5.00)."
    )


def test_normal_noise_flags_nothing(search, normal_traffic):
    planner = AgentFactory(project=search, name="planner")
    usage_rows(noisy_traffic(random.Random(99), planner, 200))
    for minutes in (0, 40):  # this hour, and at 15:10 (14:00 as the hour just completed)
        assert spend_anomalies_detect(now=NOW + dt.timedelta(minutes=minutes)) == 0
    assert anomalies() == []


def test_just_below_the_cutoff_is_not_flagged_and_reaching_it_is(search, normal_traffic):
    planner = AgentFactory(project=search, name="planner")
    usage_rows(planner_history(random.Random(7), planner))
    usage_rows([(planner, HOUR + dt.timedelta(minutes=10), "4.999999999")])
    assert spend_anomalies_detect(now=NOW) == 0
    usage_rows([(planner, HOUR + dt.timedelta(minutes=20), "0.000000001")])
    assert spend_anomalies_detect(now=NOW) == 1
    assert anomalies() == [("agent", "planner", AnomalyWindow.HOUR, HOUR, 5 * USD, 2 * USD, 5 * USD)]


def test_once_per_window_and_a_spike_at_the_end_of_an_hour_is_caught_in_the_next(search, normal_traffic):
    planner = AgentFactory(project=search, name="planner")
    usage_rows(planner_history(random.Random(7), planner))
    usage_rows([(planner, HOUR + dt.timedelta(minutes=10), "2.00")])
    assert spend_anomalies_detect(now=HOUR + dt.timedelta(minutes=55)) == 0
    # Booked after the 14:55 run, before the hour ends.
    usage_rows([(planner, HOUR + dt.timedelta(minutes=58), "9.00")])

    assert spend_anomalies_detect(now=HOUR + dt.timedelta(minutes=62)) == 1  # as the hour just completed
    assert spend_anomalies_detect(now=HOUR + dt.timedelta(minutes=62)) == 0  # run twice
    assert spend_anomalies_detect(now=HOUR + dt.timedelta(minutes=67)) == 0  # the next run
    assert anomalies() == [("agent", "planner", AnomalyWindow.HOUR, HOUR, 11 * USD, 2 * USD, 5 * USD)]


def test_new_agents_and_projects_without_enough_history_are_never_flagged(organization, normal_traffic):
    lab = ProjectFactory(organization=organization, name="Lab", slug="lab")
    # First seen today: a $50 hour.
    newbie = AgentFactory(project=lab, name="newbie")
    # Six days of one $1 call at 14:00, then the same $50 hour: 6 windows of history, 7 are needed.
    junior = AgentFactory(project=lab, name="junior")
    rows = [(junior, HOUR - dt.timedelta(days=d), "1.00") for d in range(1, 7)]
    usage_rows(rows + [(agent, HOUR + dt.timedelta(minutes=15), "50.00") for agent in (newbie, junior)])

    assert spend_anomalies_detect(now=NOW) == 0

    # A seventh day of history: junior's hour and day are far above its $1 (cutoff $2), and so are
    # the project's ($100 today); newbie still has none.
    usage_rows([(junior, HOUR - dt.timedelta(days=7), "1.00")])
    assert spend_anomalies_detect(now=NOW) == 4
    today = dt.datetime(2026, 11, 20, tzinfo=UTC)
    assert anomalies() == [
        ("agent", "junior", AnomalyWindow.DAY, today, 50 * USD, USD, 2 * USD),
        ("agent", "junior", AnomalyWindow.HOUR, HOUR, 50 * USD, USD, 2 * USD),
        ("project", "Lab", AnomalyWindow.DAY, today, 100 * USD, USD, 2 * USD),
        ("project", "Lab", AnomalyWindow.HOUR, HOUR, 100 * USD, USD, 2 * USD),
    ]


def test_the_history_needed_and_the_floor_are_settings(organization, settings):
    lab = ProjectFactory(organization=organization, name="Lab", slug="lab")
    junior = AgentFactory(project=lab, name="junior")
    usage_rows([(junior, HOUR - dt.timedelta(days=d), "1.00") for d in range(1, 7)])
    usage_rows([(junior, HOUR + dt.timedelta(minutes=15), "50.00")])
    settings.SPENDGUARD_ANOMALY_MIN_EXCESS_USD = "100"
    settings.SPENDGUARD_ANOMALY_MIN_HISTORY = 6

    assert spend_anomalies_detect(now=NOW) == 0  # six days are enough now, but $50 is under a $100 floor

    settings.SPENDGUARD_ANOMALY_MIN_EXCESS_USD = "1"
    assert spend_anomalies_detect(now=NOW) == 4


def test_a_day_far_above_the_usual_flags_the_agent_and_its_project_in_the_organizations_day():
    organization = OrganizationFactory(slug="nyc", name="NYC", timezone="America/New_York")
    project = ProjectFactory(organization=organization, name="Billing", slug="billing")
    agent = AgentFactory(project=project, name="invoicer")
    now = dt.datetime(2026, 11, 20, 17, 30, tzinfo=UTC)  # 12:30 in New York (UTC-5)
    local_midnight = dt.datetime(2026, 11, 20, 5, tzinfo=UTC)
    # Every day one $2 call at 17:00 UTC; today also four $0.90 calls in hours that are usually idle
    # (each under the $1 floor of those hours) and a $3 one at 17:00 (under that hour's $4 cutoff).
    rows = [(agent, now.replace(minute=0) - dt.timedelta(days=d), "2.00") for d in range(1, 16)]
    rows += [(agent, now.replace(hour=h, minute=5), "0.90") for h in (13, 14, 15, 16)]
    rows.append((agent, now.replace(minute=1), "3.00"))
    usage_rows(rows)

    assert spend_anomalies_detect(now=now) == 2

    # The day: $6.60 against a steady $2 (MAD 0), cutoff 2 + max(0, 1, 2) = $4.
    day = (AnomalyWindow.DAY, local_midnight, 6_600_000_000, 2 * USD, 4 * USD)
    assert anomalies() == [("agent", "invoicer", *day), ("project", "Billing", *day)]
    assert BudgetAlert.objects.get(project=project).message == (
        "Project Billing spent $6.60 on 2026-11-20 (America/New_York), far above its usual $2.00"
        " (anomaly cutoff $4.00)."
    )
    # The same day is not flagged again, also once it is the day just completed.
    assert spend_anomalies_detect(now=dt.datetime(2026, 11, 21, 5, 10, tzinfo=UTC)) == 0


def test_a_project_spike_spread_over_its_agents_flags_the_project_only(organization):
    # Ten agents with one $0.20 call a day at 14:10; today each spends $0.90 then: under each agent's
    # cutoff (0.20 + max(0, 1, 0.20) = $1.20), but the project's $9.00 is far above its $2.00
    # (cutoff 2 + max(6 x 0, 1, 2) = $4).
    project = ProjectFactory(organization=organization, name="Swarm", slug="swarm")
    workers = [AgentFactory(project=project, name=f"worker-{i}") for i in range(10)]
    rows = [(w, HOUR - dt.timedelta(days=d) + dt.timedelta(minutes=10), "0.20") for w in workers for d in range(1, 15)]
    rows += [(w, HOUR + dt.timedelta(minutes=10), "0.90") for w in workers]
    usage_rows(rows)

    # The day too: $9 against $2 a day.
    assert spend_anomalies_detect(now=NOW) == 2
    assert anomalies() == [
        ("project", "Swarm", AnomalyWindow.DAY, dt.datetime(2026, 11, 20, tzinfo=UTC), 9 * USD, 2 * USD, 4 * USD),
        ("project", "Swarm", AnomalyWindow.HOUR, HOUR, 9 * USD, 2 * USD, 4 * USD),
    ]


def test_other_organizations_history_is_not_a_baseline(search, normal_traffic):
    # The same agent name and amounts in another organization do not lend history to a new agent here.
    other = AgentFactory(project=ProjectFactory(organization=OrganizationFactory(slug="other")), name="planner")
    usage_rows(planner_history(random.Random(7), other))
    newbie = AgentFactory(project=search, name="planner")
    usage_rows([(newbie, HOUR + dt.timedelta(minutes=10), "9.00")])
    assert spend_anomalies_detect(now=NOW) == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_record_each_window_once(organization, search):
    # Both runs see no alert yet and race to insert: the once-only constraint lets one through.
    planner = AgentFactory(project=search, name="planner")
    usage_rows(planner_history(random.Random(7), planner))
    usage_rows([(planner, HOUR + dt.timedelta(minutes=10), "8.00")])

    results = run_together([lambda: spend_anomalies_detect(now=NOW) for _ in range(4)])

    # The planner is its project's only agent: the project's hour is the same spike.
    assert sum(results) == 2
    assert anomalies() == [
        ("agent", "planner", AnomalyWindow.HOUR, HOUR, 8 * USD, 2 * USD, 5 * USD),
        ("project", "Search", AnomalyWindow.HOUR, HOUR, 8 * USD, 2 * USD, 5 * USD),
    ]
