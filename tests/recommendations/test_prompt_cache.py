"""Provider prompt caching: half the uncached prompt moves to the cache (10 % of it as cache writes)."""

import datetime as dt
from decimal import Decimal

from recommendations.generators.prompt_cache import generate
from recommendations.models import Recommendation, RecommendationKind
from recommendations.services.generate import generation_context, recommendations_generate
from tests.recommendations.conftest import NOW, ledger_row, price

SONNET = {"model": "claude-sonnet-4-5", "provider": "anthropic"}


def run(org):
    return generate(generation_context(organization=org, now=NOW))


def sonnet_ledger(agent, **fields):
    """4 requests of 250,000 prompt + 1,000 completion tokens on a model with a 1.25x cache write.

    Today: 1,000,000 x $3 + 4,000 x $15 = $3.06. Cached: 500,000 stay uncached ($1.50), 450,000 read
    at $0.30 ($0.135), 50,000 written at $3.75 ($0.1875), output $0.06 = $1.8825. Saving $1.1775.
    """
    price("claude-sonnet-4-5", input="3", output="15", cache_read_usd_per_mtok="0.30", cache_write_usd_per_mtok="3.75")
    for _ in range(4):
        ledger_row(agent, cost="0.765", prompt_tokens=250_000, completion_tokens=1_000, **SONNET, **fields)


def test_saving_at_the_cache_read_price_net_of_cache_writes(org, agent):
    sonnet_ledger(agent)
    # Not counted: outside the window, unpriced, already batch.
    ledger_row(agent, cost="9.00", prompt_tokens=900_000, occurred_at=NOW - dt.timedelta(days=31), **SONNET)
    ledger_row(agent, cost=None, prompt_tokens=900_000, **SONNET)
    ledger_row(agent, cost="9.00", prompt_tokens=900_000, is_batch=True, **SONNET)

    (finding,) = run(org)

    assert finding.monthly_saving_usd == Decimal("1.1775")
    assert (finding.baseline_cost_usd, finding.baseline_requests) == (Decimal("3.06"), 4)
    assert (finding.agent_id, finding.model, finding.provider, finding.target) == (
        agent.pk,
        "claude-sonnet-4-5",
        "anthropic",
        "prompt caching",
    )
    assert finding.title == "Use prompt caching for planner on claude-sonnet-4-5"
    assert "$1.18" in finding.explanation
    assert finding.evidence == {
        "requests": 4,
        "prompt_tokens": 1_000_000,
        "cached_tokens": 0,
        "average_prompt_tokens": 250_000,
        "reusable_prefix_share_percent": 50,
        "cache_write_share_percent": 10,
        "assumed_cache_read_tokens": 450_000,
        "assumed_cache_write_tokens": 50_000,
        "input_usd_per_mtok": "3",
        "cache_read_usd_per_mtok": "0.3",
        "cache_write_usd_per_mtok": "3.75",
        "baseline_cost_usd": "3.06",
        "current_cost_usd": "3.06",
        "with_cache_cost_usd": "1.8825",
        "window_saving_usd": "1.1775",
        "monthly_saving_usd": "1.1775",
    }


def test_a_small_cached_share_counts_and_writes_without_a_write_price_cost_the_input_rate(org, agent):
    price("gpt-4o", input="2.50", output="10", cache_read_usd_per_mtok="1.25")
    for _ in range(2):  # 5 % cached
        ledger_row(agent, cost="2.50", prompt_tokens=1_000_000, cached_tokens=50_000)

    (finding,) = run(org)

    # Uncached 1,900,000 -> 950,000 cacheable: 95,000 writes at $2.50 (no change), 855,000 reads
    # $1.25 cheaper: 855,000 x $1.25 / 1M = $1.06875.
    assert finding.monthly_saving_usd == Decimal("1.06875")
    assert finding.evidence["cached_tokens"] == 100_000


def test_nothing_once_a_tenth_of_the_prompt_is_cached(org, agent):
    price("gpt-4o", input="2.50", output="10", cache_read_usd_per_mtok="1.25")
    for _ in range(2):
        ledger_row(agent, cost="2.50", prompt_tokens=1_000_000, cached_tokens=100_000)

    assert run(org) == []


def test_nothing_for_models_without_a_cheaper_cache_read(org, agent):
    price("gpt-4o", input="2.50", output="10")  # no cache price
    price("gpt-4o-mini", input="0.15", output="0.60", cache_read_usd_per_mtok="0.15")  # no discount
    ledger_row(agent, cost="5.00", prompt_tokens=2_000_000)
    ledger_row(agent, cost="5.00", prompt_tokens=2_000_000, model="gpt-4o-mini")
    ledger_row(agent, cost="5.00", prompt_tokens=2_000_000, model="unknown-model")

    assert run(org) == []


def test_average_prompt_must_reach_the_cacheable_minimum(settings, org, agent):
    settings.SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD = "0"
    price("gpt-4o", input="2.50", output="10", cache_read_usd_per_mtok="1.25")
    ledger_row(agent, cost="0.01", prompt_tokens=1_023)
    ledger_row(agent, cost="0.01", prompt_tokens=1_023)
    assert run(org) == []

    ledger_row(agent, cost="0.01", prompt_tokens=1_026)  # average 1,024
    # 3,072 uncached -> 1,536 cacheable, 154 writes (rounded up), 1,382 reads x $1.25 / 1M.
    assert [f.monthly_saving_usd for f in run(org)] == [Decimal("0.0017275")]


def test_below_the_minimum_saving(settings, org, agent):
    sonnet_ledger(agent)

    settings.SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD = "1.1776"
    assert run(org) == []


def test_generation_records_and_refreshes_the_recommendation(org, agent):
    sonnet_ledger(agent)
    generators = {RecommendationKind.PROMPT_CACHE: generate}

    first = recommendations_generate(organization=org, now=NOW, generators=generators)

    rec = Recommendation.objects.get()
    assert first.created == [rec.pk]
    assert (rec.kind, rec.agent, rec.project, rec.model, rec.target) == (
        RecommendationKind.PROMPT_CACHE,
        agent,
        agent.project,
        "claude-sonnet-4-5",
        "prompt caching",
    )
    assert rec.estimated_monthly_saving_usd == Decimal("1.1775")
    assert (rec.baseline_cost_usd, rec.baseline_requests) == (Decimal("3.06"), 4)
    assert (rec.confidence, rec.effort) == ("medium", "low")
    assert rec.priority_score == Decimal("0.7065")  # 1.1775 x 0.6 / 1

    second = recommendations_generate(organization=org, now=NOW, generators=generators)

    assert second.refreshed == [rec.pk]
    assert Recommendation.objects.count() == 1
