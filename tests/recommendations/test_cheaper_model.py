"""Cheaper model: a substitute of the same mode that fits the traffic and has its capabilities,
priced on the agent's actual token mix; vetted inside a quality-tier family, labelled outside one.

The ledger of most tests (``planner_traffic``): 4 chat requests to gpt-4o, each 100,000 prompt tokens
(50,000 of them cached) and 10,000 completion tokens — sums 400,000 prompt (200,000 uncached +
200,000 cached) and 40,000 completion tokens.

  gpt-4o       ($2.50 in, $1.25 cached, $10 out / 1M): 0.50 + 0.25  + 0.40  = $1.15
  gpt-4o-mini  ($0.15 in, $0.075 cached, $0.60 out):   0.03 + 0.015 + 0.024 = $0.069
  saving in the 30-day window = $1.081 = the monthly saving (30 days x 30 / 30).
Had cached tokens been priced at the mini's input rate, it would be 0.06 + 0.024 = $0.084 ($1.066).
"""

import datetime as dt
from decimal import Decimal

import pytest

from pricing.models import ModelPrice, PriceSource
from recommendations.catalog import current_prices, deployment_route
from recommendations.generators.cheaper_model import generate
from recommendations.models import ModelTier, Recommendation, RecommendationKind
from recommendations.services.generate import generation_context, recommendations_generate
from tests.recommendations.conftest import IN_WINDOW, NOW, PRICES_FROM, ledger_row, price

pytestmark = pytest.mark.django_db
CAPS = {"supports_function_calling": True, "supports_vision": True, "supports_audio_input": False}
WINDOW = {"max_input_tokens": 128_000, "max_output_tokens": 16_384}


def run(org, **scope):
    return generate(generation_context(organization=org, now=NOW, **scope))


def gpt_4o(**fields):
    fields = {"cache_read_usd_per_mtok": "1.25", "capabilities": CAPS, **WINDOW, **fields}
    return price("gpt-4o", input="2.50", output="10.00", provider="openai", **fields)


def gpt_4o_mini(**fields):
    fields = {"cache_read_usd_per_mtok": "0.075", "capabilities": CAPS, **WINDOW, **fields}
    return price("gpt-4o-mini", input="0.15", output="0.60", provider="openai", **fields)


def planner_traffic(agent, requests=4):
    for _ in range(requests):
        ledger_row(agent, cost="0.2875", prompt_tokens=100_000, cached_tokens=50_000, completion_tokens=10_000)


def family(name, *models):
    for model in models:
        ModelTier.objects.create(model=model, family=name)


def test_vetted_substitute_is_priced_on_the_actual_mix_with_its_cache_read_rate(org, agent):
    current, mini = gpt_4o(), gpt_4o_mini()
    family("general", "gpt-4o", "gpt-4o-mini")
    planner_traffic(agent)

    (finding,) = run(org)

    assert finding.kind == RecommendationKind.CHEAPER_MODEL
    assert finding.monthly_saving_usd == Decimal("1.081")  # not 1.066: cached at $0.075, not $0.15
    assert finding.baseline_cost_usd == Decimal("1.15")
    assert finding.baseline_requests == 4
    assert (finding.confidence, finding.effort) == ("high", "low")
    assert (finding.project_id, finding.agent_id, finding.operation) == (agent.project_id, agent.pk, "chat")
    assert (finding.model, finding.provider, finding.target) == ("gpt-4o", "openai", "gpt-4o-mini")
    assert finding.title == "Switch planner (chat) from gpt-4o to gpt-4o-mini"
    assert finding.explanation == (
        "In the last 30 days planner sent 4 chat requests to gpt-4o (openai): 400,000 prompt tokens (200,000 cached), "
        "40,000 completion tokens. At today's prices they cost $1.15 on gpt-4o and would cost $0.07 on "
        "gpt-4o-mini (openai), which fits the largest prompt (100,000 tokens) and completion (10,000 tokens) "
        "seen and has every capability gpt-4o lists. That is $1.08 less in the window, about $1.08 a month. "
        'gpt-4o-mini is in the same quality tier ("general") as gpt-4o.'
    )
    assert finding.evidence == {
        "requests": 4,
        "batch_requests": 0,
        "prompt_tokens": 400_000,
        "cached_tokens": 200_000,
        "cache_creation_tokens": 0,
        "completion_tokens": 40_000,
        "reasoning_tokens": 0,
        "max_prompt_tokens": 100_000,
        "max_completion_tokens": 10_000,
        "window_days": "30",
        "current_cost_usd": "1.15",
        "candidate_cost_usd": "0.069",
        "window_saving_usd": "1.081",
        "current_price_id": current.pk,
        "candidate_price_id": mini.pk,
        "current": {
            "price_id": current.pk,
            "model": "gpt-4o",
            "provider": "openai",
            "input_usd_per_mtok": "2.5",
            "output_usd_per_mtok": "10",
            "cache_read_usd_per_mtok": "1.25",
        },
        "candidate": {
            "price_id": mini.pk,
            "model": "gpt-4o-mini",
            "provider": "openai",
            "input_usd_per_mtok": "0.15",
            "output_usd_per_mtok": "0.6",
            "cache_read_usd_per_mtok": "0.075",
        },
        "vetted": True,
        "tier_family": "general",
    }


def test_candidates_that_cannot_take_the_traffic_are_skipped(org, agent):
    gpt_4o(), gpt_4o_mini()
    # Each would be far cheaper than gpt-4o-mini, and each fails one rule.
    price("small-window", input="0.01", output="0.01", provider="openai", capabilities=CAPS, max_input_tokens=99_999)
    price("short-output", input="0.01", output="0.01", provider="openai", capabilities=CAPS, max_output_tokens=9_999)
    price("no-vision", input="0.01", output="0.01", provider="openai", capabilities={"supports_function_calling": True})
    price("no-caps-known", input="0.01", output="0.01", provider="openai")  # manual row without capabilities
    price("an-embedder", input="0.01", output="0.01", provider="openai", mode="embedding", capabilities=CAPS)
    price("free-preview", input="0", output="0", provider="openai", capabilities=CAPS)
    price("azure/gpt-4o", input="0.10", output="0.10", provider="azure", capabilities=CAPS)  # same model: provider's
    names = ["small-window", "short-output", "no-vision", "no-caps-known", "an-embedder", "free-preview"]
    family("general", "gpt-4o", "gpt-4o-mini", "azure/gpt-4o", *names)
    planner_traffic(agent)

    (finding,) = run(org)

    assert (finding.target, finding.monthly_saving_usd) == ("gpt-4o-mini", Decimal("1.081"))


def test_unknown_limits_fit(org, agent):
    gpt_4o()
    gpt_4o_mini(max_input_tokens=None, max_output_tokens=None)
    family("general", "gpt-4o", "gpt-4o-mini")
    planner_traffic(agent)

    (finding,) = run(org)

    assert finding.target == "gpt-4o-mini"


def test_without_a_tier_only_the_same_provider_and_route_is_offered_and_labelled(org, agent):
    gpt_4o(), gpt_4o_mini()
    price("claude-haiku", input="0.01", output="0.01", provider="anthropic", capabilities=CAPS)  # other provider
    price("ft:gpt-4o-mini", input="0.01", output="0.01", provider="openai", capabilities=CAPS)  # a fine-tune
    price("gmi/openai/gpt-4o-mini", input="0.01", output="0.01", provider="openai", capabilities=CAPS)  # reseller
    planner_traffic(agent)

    (finding,) = run(org)

    assert (finding.target, finding.monthly_saving_usd) == ("gpt-4o-mini", Decimal("1.081"))
    assert (finding.confidence, finding.effort) == ("low", "low")
    assert finding.title == (
        "Switch planner (chat) from gpt-4o to gpt-4o-mini — not marked as an equivalent in the quality tiers"
    )
    assert finding.explanation.endswith(
        "gpt-4o-mini is not marked as an equivalent in the quality tiers — check quality before switching."
    )
    assert (finding.evidence["vetted"], finding.evidence["tier_family"]) == (False, None)


def test_an_unvetted_substitute_keeps_the_region(org, agent):
    price("azure/eu/gpt-4o", input="2.50", output="10.00", provider="azure")
    price("azure/eu/gpt-4o-mini", input="0.15", output="0.60", provider="azure")
    price("azure/gpt-4o-mini", input="0.10", output="0.40", provider="azure")  # cheaper, but not in the EU
    for _ in range(5):
        ledger_row(agent, cost="1", model="azure/eu/gpt-4o", provider="azure", prompt_tokens=100_000)

    (finding,) = run(org)

    # 500,000 prompt + 1,000 completion tokens: $1.25 + $0.01 on gpt-4o, $0.075 + $0.0006 on the mini.
    assert (finding.target, finding.monthly_saving_usd) == ("azure/eu/gpt-4o-mini", Decimal("1.1844"))
    assert finding.confidence == "low"


@pytest.mark.parametrize(
    ("name", "route"),
    [
        ("gpt-4o", ""),
        ("azure/gpt-4o", "azure/"),
        ("azure/eu/gpt-4o", "azure/eu/"),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu."),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", ""),
        ("bedrock/us-gov-east-1/anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock/us-gov-east-1/"),
        ("gpt-4.1-mini", ""),
    ],
)
def test_deployment_route(name, route):
    assert deployment_route(name) == route


def test_never_across_families(org, agent):
    gpt_4o(), gpt_4o_mini()
    family("smart", "gpt-4o")
    family("fast", "gpt-4o-mini")
    planner_traffic(agent)

    assert run(org) == []


def test_a_vetted_substitute_from_another_provider_is_medium_effort(org, agent):
    gpt_4o()
    haiku = {"cache_read_usd_per_mtok": "0.075", "capabilities": CAPS, **WINDOW}
    price("claude-haiku", input="0.15", output="0.60", provider="anthropic", **haiku)  # the mini's rates
    family("general", "gpt-4o", "claude-haiku")
    planner_traffic(agent)

    (finding,) = run(org)

    assert (finding.target, finding.monthly_saving_usd) == ("claude-haiku", Decimal("1.081"))
    assert (finding.confidence, finding.effort) == ("high", "medium")
    assert finding.explanation.endswith("Switching moves this traffic from openai to anthropic.")


def test_nothing_cheaper_means_no_finding(org, agent):
    gpt_4o()
    price("gpt-4o-deluxe", input="5", output="20", provider="openai", capabilities=CAPS)
    price(
        "same-price", input="2.50", output="10.00", provider="openai", cache_read_usd_per_mtok="1.25", capabilities=CAPS
    )
    planner_traffic(agent)

    assert run(org) == []


def test_the_saving_must_clear_the_minimum(org, agent, settings):
    gpt_4o(), gpt_4o_mini()
    planner_traffic(agent)

    settings.SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD = "1.09"
    assert run(org) == []
    settings.SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD = "1.081"  # the saving exactly: enough
    assert [f.monthly_saving_usd for f in run(org)] == [Decimal("1.081")]


def test_rows_outside_the_window_unpriced_or_without_a_current_price_are_ignored(org, agent):
    gpt_4o(), gpt_4o_mini()
    planner_traffic(agent)
    big = {"prompt_tokens": 100_000, "completion_tokens": 10_000}
    ledger_row(agent, cost="9", occurred_at=NOW - dt.timedelta(days=30, seconds=1), **big)  # before the window
    ledger_row(agent, cost="9", occurred_at=NOW, **big)  # the window ends before NOW
    ledger_row(agent, cost=None, **big)  # unpriced
    # A model the catalog does not price today (its price ended) is not a finding of its own.
    ModelPrice.objects.create(
        model="gpt-4-old",
        provider="openai",
        source=PriceSource.MANUAL,
        input_usd_per_mtok=Decimal(30),
        output_usd_per_mtok=Decimal(60),
        effective_from=PRICES_FROM,
        effective_to=IN_WINDOW,
    )
    ledger_row(agent, cost="9", model="gpt-4-old", **big)

    (finding,) = run(org)

    assert (finding.model, finding.baseline_requests, finding.monthly_saving_usd) == ("gpt-4o", 4, Decimal("1.081"))


def test_batch_rows_are_priced_at_batch_rates_on_both_sides(org, agent):
    gpt_4o(batch_input_usd_per_mtok="1.25", batch_output_usd_per_mtok="5")
    gpt_4o_mini(batch_input_usd_per_mtok="0.075", batch_output_usd_per_mtok="0.30")
    family("general", "gpt-4o", "gpt-4o-mini")
    planner_traffic(agent)  # $1.081 as in the module docstring
    for _ in range(4):
        ledger_row(
            agent, cost="1", is_batch=True, prompt_tokens=100_000, cached_tokens=50_000, completion_tokens=10_000
        )

    (finding,) = run(org)

    # The batch half, cached tokens at the standard cache-read rate (no batch one published):
    # gpt-4o 200,000 x $1.25 + 200,000 x $1.25 + 40,000 x $5 = $0.70;
    # mini   200,000 x $0.075 + 200,000 x $0.075 + 40,000 x $0.30 = $0.042; saving $0.658.
    assert finding.monthly_saving_usd == Decimal("1.081") + Decimal("0.658")
    assert finding.baseline_cost_usd == Decimal("1.15") + Decimal("0.70")
    assert (finding.evidence["requests"], finding.evidence["batch_requests"]) == (8, 4)


def test_current_prices_prefer_manual_rows_and_respect_effective_dates(db):
    synced = dict(input_usd_per_mtok=Decimal(1), output_usd_per_mtok=Decimal(1), effective_from=PRICES_FROM)
    ModelPrice.objects.create(model="m", provider="openai", source=PriceSource.LITELLM, **synced)
    manual = price("m", input="2", output="2", provider="openai")
    ModelPrice.objects.create(model="later", source=PriceSource.MANUAL, **{**synced, "effective_from": NOW})
    ModelPrice.objects.create(model="ended", source=PriceSource.MANUAL, **{**synced, "effective_to": IN_WINDOW})

    assert current_prices(at=NOW - dt.timedelta(seconds=1)) == [manual]
    assert [p.model for p in current_prices(at=NOW)] == ["later", "m"]


def test_generation_records_one_row_and_refreshes_it(org, agent):
    gpt_4o(), gpt_4o_mini()
    family("general", "gpt-4o", "gpt-4o-mini")
    planner_traffic(agent)
    generators = {RecommendationKind.CHEAPER_MODEL: generate}

    first = recommendations_generate(organization=org, now=NOW, generators=generators)

    rec = Recommendation.objects.get()
    assert first.created == [rec.pk]
    assert (rec.kind, rec.project, rec.agent, rec.operation) == ("cheaper_model", agent.project, agent, "chat")
    assert (rec.model, rec.provider, rec.target) == ("gpt-4o", "openai", "gpt-4o-mini")
    assert (rec.estimated_monthly_saving_usd, rec.baseline_cost_usd, rec.baseline_requests) == (
        Decimal("1.081"),
        Decimal("1.15"),
        4,
    )
    assert (rec.confidence, rec.effort, rec.priority_score) == ("high", "low", Decimal("1.0810"))
    assert (rec.window_start, rec.window_end) == (NOW - dt.timedelta(days=30), NOW)
    assert rec.evidence["window_saving_usd"] == "1.081"

    # Two more requests: 6 x the per-request saving ($0.27025) = $1.6215.
    planner_traffic(agent, requests=2)
    later = NOW + dt.timedelta(hours=1)
    second = recommendations_generate(organization=org, now=later, generators=generators)

    rec = Recommendation.objects.get()
    assert (second.created, second.refreshed) == ([], [rec.pk])
    assert (rec.estimated_monthly_saving_usd, rec.baseline_requests) == (Decimal("1.6215"), 6)
    assert (rec.created_at, rec.refreshed_at) == (NOW, later)
