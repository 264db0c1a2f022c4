"""Batch API: tagged, latency-insensitive traffic priced at the standard minus the batch rates."""

import datetime as dt
from decimal import Decimal

from recommendations.generators.batch_api import generate
from recommendations.models import Recommendation, RecommendationKind
from recommendations.services.generate import generation_context, recommendations_generate
from tests.recommendations.conftest import NOW, ledger_row, price

WAITS = {"latency": "insensitive"}


def run(org):
    return generate(generation_context(organization=org, now=NOW))


def batch_priced_gpt_4o():
    return price(
        "gpt-4o",
        input="2.50",
        output="10",
        cache_read_usd_per_mtok="1.25",
        batch_input_usd_per_mtok="1.25",
        batch_output_usd_per_mtok="5",
    )


def tagged_ledger(agent):
    """Two tagged requests, $2.25 cheaper through the batch API (see the amounts per row)."""
    batch_priced_gpt_4o()
    # Standard: 800,000 x $2.50 + 200,000 cached x $1.25 + 100,000 x $10 = $2.00 + $0.25 + $1.00 = $3.25.
    # Batch: 800,000 x $1.25 + 200,000 x $1.25 (no batch cache-read rate: the standard one) + 100,000 x $5
    # = $1.00 + $0.25 + $0.50 = $1.75. Saving $1.50.
    ledger_row(
        agent, cost="3.25", prompt_tokens=1_000_000, cached_tokens=200_000, completion_tokens=100_000, tags=WAITS
    )
    # Standard 400,000 x $2.50 + 50,000 x $10 = $1.50; batch $0.50 + $0.25 = $0.75. Saving $0.75.
    ledger_row(agent, cost="1.50", prompt_tokens=400_000, completion_tokens=50_000, tags={"batchable": True})


def test_saving_of_tagged_traffic_at_batch_rates(org, agent):
    tagged_ledger(agent)
    big = {"prompt_tokens": 4_000_000, "completion_tokens": 100_000}
    # Not counted: untagged, tagged otherwise, already batch, outside the window, unpriced.
    ledger_row(agent, cost="11.00", **big)
    ledger_row(agent, cost="11.00", tags={"latency": "sensitive", "batchable": False}, **big)
    ledger_row(agent, cost="11.00", tags={"batchable": "yes"}, **big)
    ledger_row(agent, cost="5.50", is_batch=True, tags=WAITS, **big)
    ledger_row(agent, cost="11.00", tags=WAITS, occurred_at=NOW - dt.timedelta(days=30, seconds=1), **big)
    ledger_row(agent, cost=None, tags=WAITS, **big)

    (finding,) = run(org)

    assert finding.monthly_saving_usd == Decimal("2.25")
    assert (finding.baseline_cost_usd, finding.baseline_requests) == (Decimal("4.75"), 2)
    assert (finding.agent_id, finding.model, finding.provider, finding.target) == (
        agent.pk,
        "gpt-4o",
        "openai",
        "batch API",
    )
    assert finding.title == "Send the latency-insensitive traffic of planner on gpt-4o through the batch API"
    assert "$2.25" in finding.explanation
    assert finding.evidence == {
        "tag_convention": '{"latency": "insensitive"} or {"batchable": true}',
        "latency_insensitive": "tagged",
        "requests": 2,
        "prompt_tokens": 1_400_000,
        "completion_tokens": 150_000,
        "cached_tokens": 200_000,
        "input_usd_per_mtok": "2.5",
        "output_usd_per_mtok": "10",
        "batch_input_usd_per_mtok": "1.25",
        "batch_output_usd_per_mtok": "5",
        "baseline_cost_usd": "4.75",
        "standard_cost_usd": "4.75",
        "batch_cost_usd": "2.5",
        "window_saving_usd": "2.25",
        "monthly_saving_usd": "2.25",
    }


NIGHT = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)  # a Friday, 02:00 in the organization's UTC
SATURDAY_NOON = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
FRIDAY_NOON = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def unattended_ledger(agent, *, daytime: int = 0, end_user: str = ""):
    """Nine untagged off-hours requests (night and weekend) plus ``daytime`` weekday-noon ones."""
    batch_priced_gpt_4o()
    # Each: 1,000,000 prompt x $2.50 + 100,000 output x $10 = $3.50 standard, $1.75 batch: $1.75 saved.
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 100_000}
    for when in [NIGHT] * 5 + [SATURDAY_NOON] * 4:
        ledger_row(agent, cost="3.50", occurred_at=when, **usage)
    for _ in range(daytime):
        ledger_row(agent, cost="3.50", occurred_at=FRIDAY_NOON, end_user=end_user, **usage)


def test_untagged_traffic_observed_unattended_is_a_low_confidence_finding(org, agent):
    unattended_ledger(agent, daytime=1)  # 9 of 10 off hours: exactly the 90 % share

    (finding,) = run(org)

    assert finding.monthly_saving_usd == Decimal("17.5")  # 10 x $1.75
    assert (finding.confidence, finding.baseline_requests) == ("low", 10)
    assert finding.title == "Send the unattended off-hours traffic of planner on gpt-4o through the batch API"
    assert "observed, not tagged" in finding.explanation
    assert finding.evidence["latency_insensitive"] == "observed off hours, no end user"


def test_no_observed_finding_with_an_end_user_or_too_much_daytime_traffic(org, agent):
    unattended_ledger(agent, daytime=1, end_user="customer-1")
    assert run(org) == []


def test_no_observed_finding_when_more_than_a_tenth_runs_in_working_hours(org, agent):
    unattended_ledger(agent, daytime=2)  # 9 of 11 off hours: 82 %
    assert run(org) == []


def test_nothing_without_batch_rates(org, agent):
    price("gpt-4o", input="2.50", output="10")
    ledger_row(agent, cost="12.50", prompt_tokens=1_000_000, completion_tokens=1_000_000, tags=WAITS)

    assert run(org) == []


def test_nothing_when_the_tagged_traffic_already_runs_in_batch(org, agent):
    batch_priced_gpt_4o()
    ledger_row(agent, cost="6.25", prompt_tokens=1_000_000, completion_tokens=1_000_000, tags=WAITS, is_batch=True)

    assert run(org) == []


def test_below_the_minimum_saving(settings, org, agent):
    tagged_ledger(agent)

    settings.SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD = "2.26"
    assert run(org) == []


def test_generation_records_and_refreshes_the_recommendation(org, agent):
    tagged_ledger(agent)
    generators = {RecommendationKind.BATCH_API: generate}

    first = recommendations_generate(organization=org, now=NOW, generators=generators)

    rec = Recommendation.objects.get()
    assert first.created == [rec.pk]
    assert (rec.kind, rec.agent, rec.project, rec.model, rec.provider, rec.target) == (
        RecommendationKind.BATCH_API,
        agent,
        agent.project,
        "gpt-4o",
        "openai",
        "batch API",
    )
    assert rec.estimated_monthly_saving_usd == Decimal("2.25")
    assert (rec.baseline_cost_usd, rec.baseline_requests) == (Decimal("4.75"), 2)
    assert (rec.confidence, rec.effort) == ("high", "medium")
    assert rec.priority_score == Decimal("1.1250")  # 2.25 x 1.0 / 2

    second = recommendations_generate(organization=org, now=NOW, generators=generators)

    assert second.refreshed == [rec.pk]
    assert Recommendation.objects.count() == 1
