"""Cheaper provider: the same model (same name after its ``provider/`` prefix) from another provider,
priced on the agent's actual token mix.

The ledger of most tests (``planner_traffic``): 2 requests to gpt-4o (openai), each 1,000,000 prompt
tokens (500,000 of them cached) and 100,000 completion tokens — sums 1,000,000 uncached + 1,000,000
cached prompt tokens and 200,000 completion tokens.

  gpt-4o        openai ($2.50 in, $1.25 cached, $10 out / 1M): 2.50 + 1.25 + 2.00 = $5.75
  azure/gpt-4o  azure  ($2.00 in, $0.50 cached, $8 out):       2.00 + 0.50 + 1.60 = $4.10
  saving in the 30-day window = $1.65 = the monthly saving.
Had the cached tokens been priced at azure's input rate: 4.00 + 1.60 = $5.60, a $0.15 saving.
"""

import datetime as dt
from decimal import Decimal

import pytest

from recommendations.catalog import same_model_key
from recommendations.generators.cheaper_provider import generate
from recommendations.models import Recommendation, RecommendationKind
from recommendations.services.generate import generation_context, recommendations_generate
from tests.recommendations.conftest import NOW, ledger_row, price

CAPS = {"supports_function_calling": True, "supports_vision": True}


def run(org, **scope):
    return generate(generation_context(organization=org, now=NOW, **scope))


def catalog():
    current = price(
        "gpt-4o", input="2.50", output="10", provider="openai", cache_read_usd_per_mtok="1.25", capabilities=CAPS
    )
    azure = price(
        "azure/gpt-4o", input="2", output="8", provider="azure", cache_read_usd_per_mtok="0.50", capabilities=CAPS
    )
    return current, azure


def planner_traffic(agent, requests=2, **fields):
    for _ in range(requests):
        ledger_row(
            agent, cost="2.875", prompt_tokens=1_000_000, cached_tokens=500_000, completion_tokens=100_000, **fields
        )


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("gpt-4o", "gpt-4o"),
        ("azure/gpt-4o", "gpt-4o"),
        ("gemini/gemini-2.5-pro", "gemini-2.5-pro"),
        ("vertex_ai/claude-sonnet-4-5@20250929", "claude-sonnet-4-5-20250929"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929"),
        # Not the same as the names above: a region, a Bedrock name, a reseller's vendor path.
        ("azure/eu/gpt-4o", "eu/gpt-4o"),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        ("gmi/openai/gpt-4o", "openai/gpt-4o"),
        # Moving aliases are never the same model.
        ("mistral/mistral-large-latest", None),
        ("chatgpt-4o-latest", None),
    ],
)
def test_same_model_key(name, key):
    assert same_model_key(name) == key


@pytest.mark.django_db
def test_the_same_model_from_another_provider_is_priced_with_its_cache_read_rate(org, agent):
    current, azure = catalog()
    cheap = {"input": "1", "output": "1", "capabilities": CAPS}
    # Each would be cheaper than azure/gpt-4o; none qualifies.
    price("azure/eu/gpt-4o", provider="azure", **cheap)  # a regional deployment: not matched
    price("gmi/openai/gpt-4o", provider="gmi", **cheap)  # a reseller's vendor path: not matched
    price("openai/gpt-4o", provider="openai", **cheap)  # the same provider
    price("bedrock/gpt-4o", provider="bedrock", mode="embedding", **cheap)  # another mode
    price("manual/gpt-4o", provider="", **cheap)  # no provider named
    price("ollama/gpt-4o", provider="ollama", input="0", output="0", capabilities=CAPS)  # charges nothing
    price("snowflake/gpt-4o", provider="snowflake", max_input_tokens=999_999, **cheap)  # prompt too large
    price("together/gpt-4o", provider="together", max_output_tokens=99_999, **cheap)  # completion too large
    price("deepinfra/gpt-4o", provider="deepinfra", input="1", output="1", capabilities={"supports_vision": True})
    planner_traffic(agent)

    (finding,) = run(org)

    assert finding.kind == RecommendationKind.CHEAPER_PROVIDER
    assert finding.monthly_saving_usd == Decimal("1.65")  # not 0.15: cached at $0.50, not $2
    assert (finding.baseline_cost_usd, finding.baseline_requests) == (Decimal("5.75"), 2)
    assert (finding.confidence, finding.effort) == ("high", "medium")
    assert (finding.project_id, finding.agent_id, finding.operation) == (agent.project_id, agent.pk, "")
    assert (finding.model, finding.provider, finding.target) == ("gpt-4o", "openai", "azure/gpt-4o")
    assert finding.title == "Buy gpt-4o for planner from azure (azure/gpt-4o) instead of openai"
    assert finding.explanation == (
        "In the last 30 days planner sent 2 requests to gpt-4o (openai): 2,000,000 prompt tokens "
        "(1,000,000 cached), 200,000 completion tokens. At today's prices they cost $5.75 as gpt-4o and would "
        "cost $4.10 as azure/gpt-4o from azure — the same model, with room for the largest prompt "
        "(1,000,000 tokens) and completion (100,000 tokens) seen. That is $1.65 less in the window, about "
        "$1.65 a month."
    )
    assert finding.evidence == {
        "requests": 2,
        "batch_requests": 0,
        "prompt_tokens": 2_000_000,
        "cached_tokens": 1_000_000,
        "cache_creation_tokens": 0,
        "completion_tokens": 200_000,
        "reasoning_tokens": 0,
        "max_prompt_tokens": 1_000_000,
        "max_completion_tokens": 100_000,
        "window_days": "30",
        "same_model_key": "gpt-4o",
        "current_cost_usd": "5.75",
        "candidate_cost_usd": "4.1",
        "window_saving_usd": "1.65",
        "current_price_id": current.pk,
        "candidate_price_id": azure.pk,
        "candidate_provider": "azure",
        "current": {
            "price_id": current.pk,
            "model": "gpt-4o",
            "provider": "openai",
            "input_usd_per_mtok": "2.5",
            "output_usd_per_mtok": "10",
            "cache_read_usd_per_mtok": "1.25",
        },
        "candidate": {
            "price_id": azure.pk,
            "model": "azure/gpt-4o",
            "provider": "azure",
            "input_usd_per_mtok": "2",
            "output_usd_per_mtok": "8",
            "cache_read_usd_per_mtok": "0.5",
        },
    }


@pytest.mark.django_db
def test_vertex_dates_match_and_the_cheapest_provider_wins(org, agent):
    price("claude-sonnet-4-5-20250929", input="3", output="15", provider="anthropic")
    price("vertex_ai/claude-sonnet-4-5@20250929", input="1.50", output="7.50", provider="vertex_ai-anthropic_models")
    price("azure_ai/claude-sonnet-4-5-20250929", input="2", output="10", provider="azure_ai")
    planner_traffic(agent, model="claude-sonnet-4-5-20250929", provider="anthropic")

    (finding,) = run(org)

    # No cache rates: 2,000,000 x $3 + 200,000 x $15 = $9.00 vs 2,000,000 x $1.50 + 200,000 x $7.50 = $4.50.
    assert (finding.target, finding.monthly_saving_usd) == ("vertex_ai/claude-sonnet-4-5@20250929", Decimal("4.5"))
    assert finding.evidence["candidate_provider"] == "vertex_ai-anthropic_models"


@pytest.mark.django_db
def test_moving_aliases_are_not_the_same_model(org, agent):
    price("azure/mistral-large-latest", input="8", output="24", provider="azure")
    price("mistral/mistral-large-latest", input="0.5", output="1.5", provider="mistral")
    planner_traffic(agent, model="azure/mistral-large-latest", provider="azure")

    assert run(org) == []


@pytest.mark.django_db
def test_nothing_cheaper_or_below_the_minimum_means_no_finding(org, agent, settings):
    price("gpt-4o", input="2.50", output="10", provider="openai", cache_read_usd_per_mtok="1.25")
    price("azure/gpt-4o", input="2.50", output="10", provider="azure", cache_read_usd_per_mtok="1.25")
    planner_traffic(agent)
    assert run(org) == []  # the same price elsewhere saves nothing

    price("vertex_ai/gpt-4o", input="2", output="8", provider="vertex_ai", cache_read_usd_per_mtok="0.50")
    settings.SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD = "1.66"
    assert run(org) == []  # $1.65 a month is under $1.66
    settings.SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD = "1.65"
    assert [f.target for f in run(org)] == ["vertex_ai/gpt-4o"]


@pytest.mark.django_db
def test_one_finding_over_all_operations_ignoring_old_and_unpriced_rows(org, agent):
    catalog()
    planner_traffic(agent, requests=1)
    planner_traffic(agent, requests=1, operation="responses")
    big = {"prompt_tokens": 1_000_000, "completion_tokens": 100_000}
    ledger_row(agent, cost="9", occurred_at=NOW - dt.timedelta(days=31), **big)  # before the window
    ledger_row(agent, cost=None, **big)  # unpriced
    ledger_row(agent, cost="9", model="no-such-model", **big)  # no catalog price today

    (finding,) = run(org)

    assert (finding.model, finding.baseline_requests, finding.monthly_saving_usd) == ("gpt-4o", 2, Decimal("1.65"))


@pytest.mark.django_db
def test_generation_records_one_row_and_refreshes_it(org, agent):
    catalog()
    planner_traffic(agent)
    generators = {RecommendationKind.CHEAPER_PROVIDER: generate}

    first = recommendations_generate(organization=org, now=NOW, generators=generators)

    rec = Recommendation.objects.get()
    assert first.created == [rec.pk]
    assert (rec.kind, rec.project, rec.agent, rec.operation) == ("cheaper_provider", agent.project, agent, "")
    assert (rec.model, rec.provider, rec.target) == ("gpt-4o", "openai", "azure/gpt-4o")
    assert (rec.estimated_monthly_saving_usd, rec.baseline_cost_usd, rec.baseline_requests) == (
        Decimal("1.65"),
        Decimal("5.75"),
        2,
    )
    # priority = $1.65 x 1.0 (high) / 2 (medium effort)
    assert (rec.confidence, rec.effort, rec.priority_score) == ("high", "medium", Decimal("0.8250"))
    assert rec.evidence["candidate_provider"] == "azure"

    planner_traffic(agent)  # twice the traffic: twice the saving
    later = NOW + dt.timedelta(hours=1)
    second = recommendations_generate(organization=org, now=later, generators=generators)

    rec = Recommendation.objects.get()
    assert (second.created, second.refreshed) == ([], [rec.pk])
    assert (rec.estimated_monthly_saving_usd, rec.baseline_requests) == (Decimal("3.3"), 4)
    assert (rec.created_at, rec.refreshed_at) == (NOW, later)
