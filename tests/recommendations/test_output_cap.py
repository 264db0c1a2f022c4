"""Output caps: a max_tokens cap at the p95 of an agent's answers, when they have a long tail."""

import datetime as dt
from decimal import Decimal

from costs.models import Operation, UsageStatus
from recommendations.generators.output_cap import generate, has_long_tail, percentile
from recommendations.models import Recommendation, RecommendationKind
from recommendations.services.generate import generation_context, recommendations_generate
from tests.recommendations.conftest import NOW, ledger_row, price


def run(org):
    return generate(generation_context(organization=org, now=NOW))


def long_tail_ledger(agent, *, model="gpt-4o", reasoning=(0, 0)):
    """40 answers: 36 of 1,000 tokens, then 3,000, 4,000 (the p95: rank 38), 54,000 and 104,000.

    p50 = 1,000 (rank 20), p99 = 104,000 (rank 40): max > 4 x p50, a long tail. A cap at 4,000 removes
    50,000 + 100,000 = 150,000 output tokens; at $10 / 1M that is $1.50. Every request cost $0.01.
    """
    for completion in [1_000] * 36 + [3_000, 4_000]:
        ledger_row(agent, cost="0.01", model=model, completion_tokens=completion)
    ledger_row(agent, cost="0.01", model=model, completion_tokens=54_000, reasoning_tokens=reasoning[0])
    ledger_row(agent, cost="0.01", model=model, completion_tokens=104_000, reasoning_tokens=reasoning[1])


def test_percentiles_by_nearest_rank():
    values = list(range(1, 21))
    assert [percentile(values, p) for p in (50, 95, 99, 100)] == [10, 19, 20, 20]
    assert percentile([7], 50) == 7
    # max 400 is not above 4 x p50 (100), but p99 400 > 2 x p95 (150).
    assert has_long_tail([100] * 94 + [150] + [160] * 3 + [400, 400])
    assert not has_long_tail([100] * 95 + [150] * 5)


def test_saving_from_a_cap_at_the_p95(org, agent):
    price("gpt-4o", input="2.50", output="10")
    long_tail_ledger(agent)
    huge = {"completion_tokens": 900_000}
    # Not counted (each would move the p95 or add to the saving): a failure, an embedding, outside the
    # window, unpriced.
    ledger_row(agent, cost="9.00", status=UsageStatus.ERROR, **huge)
    ledger_row(agent, cost="9.00", operation=Operation.EMBEDDING, **huge)
    ledger_row(agent, cost="9.00", occurred_at=NOW - dt.timedelta(days=31), **huge)
    ledger_row(agent, cost=None, **huge)

    (finding,) = run(org)

    assert finding.monthly_saving_usd == Decimal("1.50")
    assert (finding.baseline_cost_usd, finding.baseline_requests) == (Decimal("0.40"), 40)
    assert (finding.agent_id, finding.model, finding.provider, finding.target) == (
        agent.pk,
        "gpt-4o",
        "openai",
        "max_tokens=4000",
    )
    assert finding.title == "Cap the output of planner on gpt-4o at 4,000 tokens"
    assert "$1.50" in finding.explanation
    assert finding.evidence == {
        "requests": 40,
        "cap_percentile": 95,
        "completion_tokens_p50": 1_000,
        "completion_tokens_p95": 4_000,
        "completion_tokens_p99": 104_000,
        "completion_tokens_max": 104_000,
        "max_tokens": 4_000,
        "requests_over_cap": 2,
        "output_tokens_removed": 150_000,
        "output_usd_per_mtok": "10",
        "baseline_cost_usd": "0.4",
        "window_saving_usd": "1.5",
        "monthly_saving_usd": "1.5",
    }


def test_the_cap_keeps_reasoning_first_and_cuts_the_answer(org, agent):
    price("o-test", input="2.50", output="10", reasoning_usd_per_mtok="20")
    long_tail_ledger(agent, model="o-test", reasoning=(6_000, 1_000))

    (finding,) = run(org)

    # 54,000 (6,000 reasoning): 48,000 x $10 + 6,000 x $20 = $0.60 -> capped to 4,000 reasoning = $0.08.
    # 104,000 (1,000 reasoning): 103,000 x $10 + 1,000 x $20 = $1.05 -> 3,000 x $10 + 1,000 x $20 = $0.05.
    assert finding.monthly_saving_usd == Decimal("0.52") + Decimal("1.00")


def test_nothing_for_a_tight_distribution_or_too_few_requests(settings, org, agent):
    settings.SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD = "0"
    price("gpt-4o", input="2.50", output="10")
    price("gpt-4o-mini", input="0.15", output="0.60")
    for completion in range(100_000, 100_040):  # max 100,039, p99 100,039 vs p95 100,037: no tail
        ledger_row(agent, cost="1.00", completion_tokens=completion)
    for completion in [1_000] * 18 + [1_000_000]:  # a long tail, but 19 requests
        ledger_row(agent, cost="1.00", model="gpt-4o-mini", completion_tokens=completion)

    assert run(org) == []


def test_below_the_minimum_saving(settings, org, agent):
    price("gpt-4o", input="2.50", output="10")
    long_tail_ledger(agent)

    settings.SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD = "1.51"
    assert run(org) == []


def test_generation_records_and_refreshes_the_recommendation(org, agent):
    price("gpt-4o", input="2.50", output="10")
    long_tail_ledger(agent)
    generators = {RecommendationKind.OUTPUT_CAP: generate}

    first = recommendations_generate(organization=org, now=NOW, generators=generators)

    rec = Recommendation.objects.get()
    assert first.created == [rec.pk]
    assert (rec.kind, rec.agent, rec.project, rec.model, rec.target) == (
        RecommendationKind.OUTPUT_CAP,
        agent,
        agent.project,
        "gpt-4o",
        "max_tokens=4000",
    )
    assert rec.estimated_monthly_saving_usd == Decimal("1.50")
    assert (rec.baseline_cost_usd, rec.baseline_requests) == (Decimal("0.40"), 40)
    assert (rec.confidence, rec.effort) == ("low", "low")
    assert rec.priority_score == Decimal("0.4500")  # 1.50 x 0.3 / 1

    second = recommendations_generate(organization=org, now=NOW, generators=generators)

    assert second.refreshed == [rec.pk]
    assert Recommendation.objects.count() == 1
