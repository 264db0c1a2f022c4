"""costs.analytics: figures are the daily rollups plus the ledger's not-yet-rolled tail, exactly;
grouping, buckets in the organization's time zone, ratios and unpriced usage.

Rollups are written directly (as the rollup job would: each bucket the sum of the ledger rows
received before the watermark) and ledger rows are received at frozen times, before or after it.
"""

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from freezegun import freeze_time

from config.errors import ValidationFailed
from costs.analytics import (
    BreakdownRow,
    CurrentSpend,
    SpendFigures,
    TrendPoint,
    UnpricedRow,
    breakdown_regroup,
    spend_breakdown,
    spend_daily_series,
    spend_today_and_month_to_date,
    spend_totals,
    spend_trend,
    top_spenders,
    unpriced_usage,
)
from costs.models import CostSource, DailyRollup, RollupState, UsageRecord, UsageStatus
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory, SprintFactory

pytestmark = pytest.mark.django_db

WATERMARK = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
_ids = itertools.count()


def ledger_row(agent, *, occurred_at, received_at=None, cost="0.01", sprint=None, **fields) -> UsageRecord:
    """A ledger row received at ``received_at`` (default: just after the watermark: the tail)."""
    fields.setdefault("model", "gpt-4o")
    fields.setdefault("provider", "openai")
    fields.setdefault("prompt_tokens", 1000)
    fields.setdefault("completion_tokens", 200)
    with freeze_time(received_at or WATERMARK + dt.timedelta(minutes=1)):
        return UsageRecord.objects.create(
            organization=agent.project.organization,
            project=agent.project,
            agent=agent,
            sprint=sprint,
            request_id=f"r{next(_ids)}",
            occurred_at=occurred_at,
            cost_usd=None if cost is None else Decimal(cost),
            cost_source=CostSource.UNPRICED if cost is None else CostSource.COMPUTED,
            **fields,
        )


def rollup(agent, *, day, cost, sprint=None, **fields) -> DailyRollup:
    fields.setdefault("model", "gpt-4o")
    fields.setdefault("provider", "openai")
    fields.setdefault("operation", "chat")
    fields.setdefault("requests", 1)
    return DailyRollup.objects.create(
        organization=agent.project.organization,
        project=agent.project,
        agent=agent,
        sprint=sprint,
        day=day,
        cost_usd=Decimal(cost),
        **fields,
    )


def rolled_until(organization, moment=WATERMARK) -> None:
    RollupState.objects.update_or_create(organization=organization, defaults={"rolled_until": moment})


@pytest.fixture
def coder(project):
    return AgentFactory(project=project, name="coder")


@pytest.fixture
def support(organization):
    return AgentFactory(project=ProjectFactory(organization=organization, slug="support"), name="triage")


def test_totals_are_rollups_plus_tail_and_ignore_rolled_ledger_rows(organization, agent):
    rolled_until(organization)
    # Rolled: in the rollup bucket, and (by the invariant) its ledger row was received before the watermark.
    rollup(agent, day=dt.date(2026, 11, 19), cost="1.25", requests=3, prompt_tokens=3000, completion_tokens=600)
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 19, 9, tzinfo=dt.UTC), received_at=WATERMARK, cost="9")
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 19, 9, tzinfo=dt.UTC), received_at=WATERMARK - dt.timedelta(1))
    # The tail: received at / after the watermark (late-arriving usage of an already rolled day too).
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 19, 10, tzinfo=dt.UTC), cost="0.000000000001")
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 20, 12, 30, tzinfo=dt.UTC), cost=None, status="error")

    totals = spend_totals(organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30))

    # received_at == watermark is tail ("received_at < rolled_until" is rolled): 9 + 1.25 + 1e-12.
    assert totals == SpendFigures(
        requests=6,
        error_requests=1,
        unpriced_requests=1,
        prompt_tokens=6000,
        completion_tokens=1200,
        cost_usd=Decimal("10.250000000001"),
    )


def test_without_rollup_state_everything_is_tail(organization, agent):
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 3, tzinfo=dt.UTC), received_at=dt.datetime(2026, 11, 3))
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 4, tzinfo=dt.UTC), cost="0.5")

    totals = spend_totals(organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30))

    assert (totals.requests, totals.cost_usd) == (2, Decimal("0.51"))


def test_breakdown_merges_rollup_and_tail_groups(organization, project, agent, coder, support):
    rolled_until(organization)
    rollup(agent, day=dt.date(2026, 11, 10), cost="2", requests=4)
    rollup(agent, day=dt.date(2026, 11, 11), cost="1", model="gpt-4o-mini", requests=2)
    rollup(coder, day=dt.date(2026, 11, 11), cost="0.5")
    rollup(support, day=dt.date(2026, 11, 12), cost="3", model="claude-sonnet-4", provider="anthropic")
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 20, 13, tzinfo=dt.UTC), cost="0.25")
    ledger_row(coder, occurred_at=dt.datetime(2026, 11, 20, 13, tzinfo=dt.UTC), cost="0.75", model="gpt-4o-mini")

    def breakdown(*group_by, **filters):
        rows = spend_breakdown(
            organization=organization,
            start=dt.date(2026, 11, 1),
            end=dt.date(2026, 11, 30),
            group_by=list(group_by),
            **filters,
        )
        return [(row.key, row.requests, row.cost_usd) for row in rows]

    assert breakdown("project") == [
        ({"project": "search"}, 9, Decimal("4.5")),
        ({"project": "support"}, 1, Decimal("3")),
    ]
    assert breakdown("agent") == [
        ({"project": "search", "agent": "planner"}, 7, Decimal("3.25")),
        ({"project": "support", "agent": "triage"}, 1, Decimal("3")),
        ({"project": "search", "agent": "coder"}, 2, Decimal("1.25")),
    ]
    assert breakdown("project", "model") == [
        ({"project": "support", "model": "claude-sonnet-4"}, 1, Decimal("3")),
        ({"project": "search", "model": "gpt-4o"}, 6, Decimal("2.75")),
        ({"project": "search", "model": "gpt-4o-mini"}, 3, Decimal("1.75")),
    ]
    assert breakdown("org", "provider") == [
        ({"org": "acme", "provider": "openai"}, 9, Decimal("4.5")),
        ({"org": "acme", "provider": "anthropic"}, 1, Decimal("3")),
    ]
    # Time buckets first (oldest first), then cost descending.
    assert breakdown("day", "agent", project=project) == [
        ({"day": dt.date(2026, 11, 10), "project": "search", "agent": "planner"}, 4, Decimal("2")),
        ({"day": dt.date(2026, 11, 11), "project": "search", "agent": "planner"}, 2, Decimal("1")),
        ({"day": dt.date(2026, 11, 11), "project": "search", "agent": "coder"}, 1, Decimal("0.5")),
        ({"day": dt.date(2026, 11, 20), "project": "search", "agent": "coder"}, 1, Decimal("0.75")),
        ({"day": dt.date(2026, 11, 20), "project": "search", "agent": "planner"}, 1, Decimal("0.25")),
    ]
    # One fine breakdown regrouped answers the coarser ones exactly (keys, figures, order).
    fine = spend_breakdown(
        organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30),
        group_by=["project", "agent", "model"],
    )  # fmt: skip
    for coarse in (["project"], ["agent"], ["model"], ["project", "model"]):
        regrouped = breakdown_regroup(fine, group_by=coarse)
        assert [(row.key, row.requests, row.cost_usd) for row in regrouped] == breakdown(*coarse), coarse
        assert regrouped == spend_breakdown(
            organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30), group_by=coarse
        )
    # model also matches behind a provider prefix; agent narrows to one agent.
    assert breakdown("model", model="gpt-4o-mini", agent=agent) == [({"model": "gpt-4o-mini"}, 2, Decimal("1"))]
    assert breakdown("operation", provider="anthropic") == [({"operation": "chat"}, 1, Decimal("3"))]


def test_breakdown_by_sprint_names_the_project_and_keeps_usage_outside_sprints(organization, project, agent):
    sprint = SprintFactory(project=project, slug="s1")
    rollup(agent, day=dt.date(2026, 11, 2), cost="1", sprint=sprint)
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 3, tzinfo=dt.UTC), sprint=sprint, cost="2")
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 25, tzinfo=dt.UTC), cost="0.5")

    rows = spend_breakdown(
        organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30), group_by=["sprint"]
    )
    assert [(row.key, row.cost_usd) for row in rows] == [
        ({"project": "search", "sprint": "s1"}, Decimal("3")),
        ({"project": "search", "sprint": None}, Decimal("0.5")),
    ]
    assert spend_totals(
        organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30), sprint=sprint
    ).cost_usd == Decimal("3")


def test_days_weeks_and_months_are_the_organizations_local_ones(db):
    tokyo = OrganizationFactory(slug="tokyo", timezone="Asia/Tokyo")
    agent = AgentFactory(project=ProjectFactory(organization=tokyo))
    rolled_until(tokyo)
    # Sunday 2026-11-29 in Tokyo is the week of Monday 11-23; 15:00 UTC on 11-29 is already Monday 11-30 there.
    rollup(agent, day=dt.date(2026, 11, 29), cost="1")
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 29, 15, tzinfo=dt.UTC), cost="2")
    # 2026-11-30 16:00 UTC is Tokyo's December 1st.
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 30, 16, tzinfo=dt.UTC), cost="4")
    # Before the range in Tokyo (10-31 23:00 local) though November in UTC: not counted.
    ledger_row(agent, occurred_at=dt.datetime(2026, 10, 31, 14, tzinfo=dt.UTC), cost="100")

    def trend(interval, start=dt.date(2026, 11, 1), end=dt.date(2026, 12, 1)):
        return [
            (p.period, p.cost_usd) for p in spend_trend(organization=tokyo, start=start, end=end, interval=interval)
        ]

    assert trend("day", start=dt.date(2026, 11, 28)) == [
        (dt.date(2026, 11, 28), Decimal(0)),
        (dt.date(2026, 11, 29), Decimal("1")),
        (dt.date(2026, 11, 30), Decimal("2")),
        (dt.date(2026, 12, 1), Decimal("4")),
    ]
    assert trend("week")[-3:] == [
        (dt.date(2026, 11, 16), Decimal(0)),
        (dt.date(2026, 11, 23), Decimal("1")),
        (dt.date(2026, 11, 30), Decimal("6")),
    ]
    assert trend("week")[0] == (dt.date(2026, 10, 26), Decimal(0))  # the week that the range's first day is in
    assert trend("month") == [(dt.date(2026, 11, 1), Decimal("3")), (dt.date(2026, 12, 1), Decimal("4"))]
    rows = spend_breakdown(
        organization=tokyo, start=dt.date(2026, 11, 1), end=dt.date(2026, 12, 1), group_by=["month", "model"]
    )
    assert [(r.key, r.cost_usd) for r in rows] == [
        ({"month": dt.date(2026, 11, 1), "model": "gpt-4o"}, Decimal("3")),
        ({"month": dt.date(2026, 12, 1), "model": "gpt-4o"}, Decimal("4")),
    ]


def test_trend_points_carry_every_figure(organization, agent):
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 2, tzinfo=dt.UTC), cost="0.003", cached_tokens=400)

    points = spend_trend(organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 2))

    assert points == [
        TrendPoint(period=dt.date(2026, 11, 1)),
        TrendPoint(
            period=dt.date(2026, 11, 2),
            requests=1,
            prompt_tokens=1000,
            completion_tokens=200,
            cached_tokens=400,
            cost_usd=Decimal("0.003"),
        ),
    ]


def test_cost_per_request_and_per_1k_tokens(organization, agent):
    rollup(agent, day=dt.date(2026, 11, 2), cost="0.01", requests=3, prompt_tokens=2000, completion_tokens=1000)
    ledger_row(
        agent, occurred_at=dt.datetime(2026, 11, 2, tzinfo=dt.UTC), cost=None, prompt_tokens=0, completion_tokens=0
    )

    [row] = spend_breakdown(
        organization=organization, start=dt.date(2026, 11, 2), end=dt.date(2026, 11, 2), group_by=["model"]
    )

    # 0.01 / 4 requests (the unpriced one included); 0.01 x 1000 / 3000 tokens, half-up at 12 places.
    assert row == BreakdownRow(
        key={"model": "gpt-4o"},
        requests=4,
        unpriced_requests=1,
        prompt_tokens=2000,
        completion_tokens=1000,
        cost_usd=Decimal("0.01"),
    )
    assert (row.cost_per_request, row.cost_per_1k_tokens) == (Decimal("0.0025"), Decimal("0.003333333333"))
    assert (SpendFigures().cost_per_request, SpendFigures().cost_per_1k_tokens) == (None, None)


def test_group_by_tag_reads_the_ledger_within_31_days(organization, agent):
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 2, tzinfo=dt.UTC), cost="1", tags={"env": "prod"})
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 3, tzinfo=dt.UTC), cost="2", tags={"env": "dev", "x": 1})
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 4, tzinfo=dt.UTC), cost="4", tags={"env": "prod"})
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 5, tzinfo=dt.UTC), cost="8")
    rolled_until(organization, dt.datetime(2026, 12, 1, tzinfo=dt.UTC))  # all rolled: tags still come from the ledger

    rows = spend_breakdown(
        organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30), group_by=["tag:env", "model"]
    )

    assert [(r.key, r.requests, r.cost_usd) for r in rows] == [
        ({"tag:env": None, "model": "gpt-4o"}, 1, Decimal("8")),
        ({"tag:env": "prod", "model": "gpt-4o"}, 2, Decimal("5")),
        ({"tag:env": "dev", "model": "gpt-4o"}, 1, Decimal("2")),
    ]
    with pytest.raises(ValidationFailed) as error:
        spend_breakdown(
            organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 12, 2), group_by=["tag:env"]
        )
    assert error.value.fields == {"end": ["The range may span at most 31 days."]}


@pytest.mark.parametrize(
    ("group_by", "start", "end", "fields"),
    [
        (
            ["colour"],
            "2026-11-01",
            "2026-11-02",
            {
                "group_by": [
                    "Unknown dimension 'colour'; choose from org, project, sprint, agent, model, provider, "
                    "operation, day, week, month or tag:<key>."
                ]
            },
        ),
        (["day", "week"], "2026-11-01", "2026-11-02", {"group_by": ["Group by at most one of day, week, month."]}),
        (["model", "model"], "2026-11-01", "2026-11-02", {"group_by": ["'model' is named twice."]}),
        (
            ["tag:a b"],
            "2026-11-01",
            "2026-11-02",
            {"group_by": ["'tag:a b': a tag key is 1-64 letters, digits, '_', '.' or '-'."]},
        ),
        (["model"], "2026-11-02", "2026-11-01", {"end": ["Must not be before start."]}),
        (["model"], "2025-10-31", "2026-11-01", {"end": ["The range may span at most 366 days."]}),
    ],
)
def test_bad_arguments_are_validation_errors(organization, group_by, start, end, fields):
    with pytest.raises(ValidationFailed) as error:
        spend_breakdown(
            organization=organization,
            start=dt.date.fromisoformat(start),
            end=dt.date.fromisoformat(end),
            group_by=group_by,
        )
    assert error.value.fields == fields


def test_today_and_month_to_date_in_local_time(db):
    org = OrganizationFactory(slug="ny", timezone="America/New_York")
    agent = AgentFactory(project=ProjectFactory(organization=org))
    rolled_until(org)
    rollup(agent, day=dt.date(2026, 11, 1), cost="5")
    rollup(agent, day=dt.date(2026, 10, 31), cost="50")
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 20, 13, tzinfo=dt.UTC), cost="1")
    # 03:00 UTC on the 21st is still the 20th in New York.
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 21, 3, tzinfo=dt.UTC), cost="2")
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 19, 13, tzinfo=dt.UTC), cost="0.5")

    current = spend_today_and_month_to_date(organization=org, now=dt.datetime(2026, 11, 21, 4, tzinfo=dt.UTC))

    assert current == CurrentSpend(
        today=dt.date(2026, 11, 20),
        month_start=dt.date(2026, 11, 1),
        today_figures=SpendFigures(requests=2, prompt_tokens=2000, completion_tokens=400, cost_usd=Decimal("3")),
        month_to_date=SpendFigures(requests=4, prompt_tokens=3000, completion_tokens=600, cost_usd=Decimal("8.5")),
    )


def test_top_spenders(organization, agent, coder, support):
    rollup(agent, day=dt.date(2026, 11, 2), cost="1")
    rollup(coder, day=dt.date(2026, 11, 2), cost="3")
    ledger_row(support, occurred_at=dt.datetime(2026, 11, 3, tzinfo=dt.UTC), cost="2")

    def top(by, limit=10):
        rows = top_spenders(
            organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30), by=by, limit=limit
        )
        return [(r.key, r.cost_usd) for r in rows]

    assert top("agent", limit=2) == [
        ({"project": "search", "agent": "coder"}, Decimal("3")),
        ({"project": "support", "agent": "triage"}, Decimal("2")),
    ]
    assert top("project") == [({"project": "search"}, Decimal("4")), ({"project": "support"}, Decimal("2"))]
    with pytest.raises(ValidationFailed):
        top("sprint")


def test_unpriced_usage_from_rollups_and_tail(organization, agent):
    rolled_until(organization)
    rollup(agent, day=dt.date(2026, 11, 2), cost="0", model="mystery", provider="", requests=3, unpriced_requests=3)
    rollup(agent, day=dt.date(2026, 11, 3), cost="1", model="gpt-4o", requests=5, unpriced_requests=1)
    rollup(agent, day=dt.date(2026, 11, 4), cost="2", model="gpt-4o-mini", requests=2)
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 20, 13, tzinfo=dt.UTC), cost=None, model="mystery", provider="")
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 20, 13, tzinfo=dt.UTC), cost="1", model="mystery", provider="")

    rows = unpriced_usage(organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30))

    assert rows == [
        UnpricedRow("mystery", "", 4, dt.date(2026, 11, 2), dt.date(2026, 11, 20)),
        UnpricedRow("gpt-4o", "openai", 1, dt.date(2026, 11, 3), dt.date(2026, 11, 3)),
    ]


def test_other_organizations_never_count(organization, agent):
    globex = OrganizationFactory(slug="globex")
    foreign = AgentFactory(project=ProjectFactory(organization=globex, slug="search"), name="planner")
    rollup(foreign, day=dt.date(2026, 11, 2), cost="7")
    ledger_row(foreign, occurred_at=dt.datetime(2026, 11, 2, tzinfo=dt.UTC), cost="9")
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 2, tzinfo=dt.UTC), cost="1")

    totals = spend_totals(organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30))

    assert (totals.requests, totals.cost_usd) == (1, Decimal("1"))


def test_daily_series_for_several_filters_in_one_query(organization, agent, coder, django_assert_num_queries):
    from django.db.models import Q

    rolled_until(organization)
    rollup(agent, day=dt.date(2026, 11, 2), cost="1")
    rollup(coder, day=dt.date(2026, 11, 2), cost="2")
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 20, 13, tzinfo=dt.UTC), cost="4")

    with django_assert_num_queries(1):
        series = spend_daily_series(
            organization=organization,
            start=dt.date(2026, 11, 1),
            end=dt.date(2026, 11, 30),
            series={"planner": Q(agent_id=agent.pk), "all": Q()},
        )

    assert series == {
        "planner": {dt.date(2026, 11, 2): Decimal("1"), dt.date(2026, 11, 20): Decimal("4")},
        "all": {dt.date(2026, 11, 2): Decimal("3"), dt.date(2026, 11, 20): Decimal("4")},
    }


def test_figures_are_the_same_before_and_after_the_rollup_job(organization, agent, coder):
    """The real job moves rows from the tail into rollups; every figure stays what it was."""
    from costs.services.rollups import rollups_refresh

    sprint = SprintFactory(project=agent.project, slug="s1")
    for hour, who, cost in [(1, agent, "0.1"), (5, coder, None), (9, agent, "0.000000000003"), (30, coder, "2")]:
        ledger_row(
            who,
            occurred_at=dt.datetime(2026, 11, 2, tzinfo=dt.UTC) + dt.timedelta(hours=hour),
            received_at=WATERMARK - dt.timedelta(hours=1),
            cost=cost,
            sprint=sprint if who is agent else None,
            status=UsageStatus.ERROR if cost is None else UsageStatus.SUCCESS,
            reasoning_tokens=50,
        )
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 20, 13, tzinfo=dt.UTC), cost="0.5")  # stays in the tail

    def figures():
        kwargs = {"organization": organization, "start": dt.date(2026, 11, 1), "end": dt.date(2026, 11, 30)}
        return (
            spend_breakdown(group_by=["day", "sprint", "agent", "model", "provider", "operation"], **kwargs),
            spend_trend(interval="week", **kwargs),
            unpriced_usage(**kwargs),
        )

    everything_in_the_tail = figures()
    rollups_refresh(until=WATERMARK)

    assert DailyRollup.objects.filter(organization=organization).count() == 3
    assert figures() == everything_in_the_tail
    assert spend_totals(
        organization=organization, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30)
    ) == SpendFigures(
        requests=5,
        error_requests=1,
        unpriced_requests=1,
        prompt_tokens=5000,
        completion_tokens=1000,
        reasoning_tokens=200,
        cost_usd=Decimal("2.600000000003"),
    )
