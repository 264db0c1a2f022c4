"""Response caching: the repeats of a prompt (after its first, successful occurrence) are the saving."""

import datetime as dt
from decimal import Decimal

from costs.models import UsageStatus
from recommendations.generators.response_cache import generate
from recommendations.models import Recommendation, RecommendationKind
from recommendations.services.generate import generation_context, recommendations_generate
from tests.factories import AgentFactory, ProjectFactory
from tests.recommendations.conftest import IN_WINDOW, NOW, ledger_row

HOUR = dt.timedelta(hours=1)


def run(org, **scope):
    return generate(generation_context(organization=org, now=NOW, **scope))


def repeated_ledger(agent):
    """Repeats cost $1.50 + $1.25 (prompt a) + $0.75 (prompt b) = $3.50 of the $12.50 of 6 requests."""
    # Prompt a: the $2.00 request is the first (earliest) although written after the $1.50 one.
    ledger_row(agent, cost="1.50", prompt_hash="a", occurred_at=IN_WINDOW + HOUR)
    ledger_row(agent, cost="2.00", prompt_hash="a", occurred_at=IN_WINDOW)
    ledger_row(agent, cost="1.25", prompt_hash="a", occurred_at=IN_WINDOW + 2 * HOUR)
    # Prompt b: same moment, so the lower id ($3.00) is the first.
    ledger_row(agent, cost="3.00", prompt_hash="b")
    ledger_row(agent, cost="0.75", prompt_hash="b")
    ledger_row(agent, cost="4.00", prompt_hash="c")  # asked once: nothing to save
    # Not counted: no hash, a failure (not a cache fill, although earliest), outside the window, unpriced.
    ledger_row(agent, cost="5.00")
    ledger_row(agent, cost="9.00", prompt_hash="a", status=UsageStatus.ERROR, occurred_at=IN_WINDOW - HOUR)
    ledger_row(agent, cost="7.00", prompt_hash="b", occurred_at=NOW - dt.timedelta(days=40))
    ledger_row(agent, cost=None, prompt_hash="b")


def test_saving_is_the_cost_of_the_repeats(agent):
    repeated_ledger(agent)

    (finding,) = run(agent.project.organization)

    assert finding.monthly_saving_usd == Decimal("3.50")  # 30-day window: the month is the window
    assert finding.baseline_cost_usd == Decimal("12.50")
    assert finding.baseline_requests == 6
    assert (finding.agent_id, finding.project_id) == (agent.pk, agent.project_id)
    assert (finding.model, finding.provider, finding.operation, finding.target) == (
        "gpt-4o",
        "openai",
        "",
        "response cache",
    )
    assert finding.title == "Cache the responses of planner on gpt-4o: 3 of 6 requests repeated a prompt"
    assert "$3.50" in finding.explanation
    assert finding.evidence == {
        "repeated_prompts": 2,
        "repeat_requests": 3,
        "total_requests": 6,
        "baseline_cost_usd": "12.5",
        "window_saving_usd": "3.5",
        "monthly_saving_usd": "3.5",
        "examples": [
            {"prompt_hash": "a", "repeats": 2, "cost_usd": "2.75"},
            {"prompt_hash": "b", "repeats": 1, "cost_usd": "0.75"},
        ],
    }


def test_nothing_without_repeats_of_the_same_agent_model_and_provider(org, agent):
    other = AgentFactory(project=agent.project, name="writer")
    ledger_row(agent, cost="3.00", prompt_hash="a")
    ledger_row(other, cost="3.00", prompt_hash="a")
    ledger_row(agent, cost="3.00", prompt_hash="a", model="gpt-4o-mini")
    ledger_row(agent, cost="3.00", prompt_hash="a", provider="azure")
    ledger_row(agent, cost="3.00", prompt_hash="b")
    ledger_row(agent, cost="3.00")
    ledger_row(agent, cost="3.00")  # same (empty) hash: unknown prompts are not repeats

    assert run(org) == []


def test_below_the_minimum_saving(settings, org, agent):
    repeated_ledger(agent)

    settings.SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD = "3.51"
    assert run(org) == []
    settings.SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD = "3.50"
    assert [f.monthly_saving_usd for f in run(org)] == [Decimal("3.50")]


def test_a_project_scoped_run_sees_only_its_project(org, agent):
    elsewhere = AgentFactory(project=ProjectFactory(organization=org, slug="ops"), name="planner")
    for repeat_cost in ("2.00", "2.00"):
        ledger_row(agent, cost=repeat_cost, prompt_hash="a")
        ledger_row(elsewhere, cost=repeat_cost, prompt_hash="a")

    assert [f.agent_id for f in run(org)] == [agent.pk, elsewhere.pk]
    assert [f.agent_id for f in run(org, project=elsewhere.project)] == [elsewhere.pk]


def test_generation_records_and_refreshes_the_recommendation(org, agent):
    repeated_ledger(agent)
    generators = {RecommendationKind.RESPONSE_CACHE: generate}

    first = recommendations_generate(organization=org, now=NOW, generators=generators)

    rec = Recommendation.objects.get()
    assert first.created == [rec.pk]
    assert (rec.kind, rec.agent, rec.project, rec.model, rec.provider, rec.target) == (
        RecommendationKind.RESPONSE_CACHE,
        agent,
        agent.project,
        "gpt-4o",
        "openai",
        "response cache",
    )
    assert rec.estimated_monthly_saving_usd == Decimal("3.50")
    assert (rec.baseline_cost_usd, rec.baseline_requests) == (Decimal("12.50"), 6)
    assert (rec.confidence, rec.effort) == ("medium", "medium")
    assert rec.priority_score == Decimal("1.0500")  # 3.50 x 0.6 / 2
    assert rec.evidence["repeat_requests"] == 3

    ledger_row(agent, cost="1.00", prompt_hash="c")  # one more repeat: $4.50
    second = recommendations_generate(organization=org, now=NOW, generators=generators)

    assert second.refreshed == [rec.pk]
    rec.refresh_from_db()
    assert Recommendation.objects.count() == 1
    assert rec.estimated_monthly_saving_usd == Decimal("4.50")
