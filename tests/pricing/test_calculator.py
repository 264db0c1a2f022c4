"""cost_of with hand-computed answers (rates are USD per 1M tokens; every amount exact)."""

from decimal import Decimal as D

import pytest

from pricing.calculator import CostBreakdown, Rates, Tier, Usage, cost_of, format_usd, quantize_usd, tiers_from_json


def parts(cost: CostBreakdown) -> tuple[D, D, D, D, D]:
    return cost.input_usd, cost.cached_input_usd, cost.cache_creation_usd, cost.output_usd, cost.total_usd


def test_plain_request() -> None:
    cost = cost_of(Rates(input=D("2.5"), output=D("10")), Usage(prompt_tokens=1234, completion_tokens=567))

    # 1234 x 2.5 / 1e6 ; 567 x 10 / 1e6
    assert parts(cost) == (D("0.003085"), D("0"), D("0"), D("0.00567"), D("0.008755"))


def test_cache_reads_and_writes_use_their_own_rates() -> None:
    rates = Rates(input=D("3"), output=D("15"), cache_read=D("0.3"), cache_write=D("3.75"))
    usage = Usage(prompt_tokens=10_000, completion_tokens=800, cached_tokens=6_000, cache_creation_tokens=1_000)

    # uncached 3,000 x 3 ; cached 6,000 x 0.3 ; written 1,000 x 3.75 ; output 800 x 15  (all / 1e6)
    assert parts(cost_of(rates, usage)) == (D("0.009"), D("0.0018"), D("0.00375"), D("0.012"), D("0.02655"))


def test_no_cache_price_bills_cached_and_written_tokens_at_the_input_price() -> None:
    usage = Usage(prompt_tokens=10_000, completion_tokens=800, cached_tokens=6_000, cache_creation_tokens=1_000)

    cost = cost_of(Rates(input=D("2"), output=D("8")), usage)

    assert parts(cost) == (D("0.006"), D("0.012"), D("0.002"), D("0.0064"), D("0.0264"))


def test_a_published_zero_cache_price_is_free_not_missing() -> None:
    usage = Usage(prompt_tokens=1_000, completion_tokens=0, cached_tokens=400)

    cost = cost_of(Rates(input=D("2"), output=D("8"), cache_read=D("0")), usage)

    assert parts(cost) == (D("0.0012"), D("0"), D("0"), D("0"), D("0.0012"))


def test_reasoning_tokens_at_the_reasoning_rate_else_the_output_rate() -> None:
    usage = Usage(prompt_tokens=0, completion_tokens=2_000, reasoning_tokens=1_500)

    with_rate = cost_of(Rates(input=D("1"), output=D("4"), reasoning=D("6")), usage)
    without = cost_of(Rates(input=D("1"), output=D("4")), usage)

    assert with_rate.output_usd == D("0.011")  # (500 x 4 + 1,500 x 6) / 1e6
    assert without.output_usd == D("0.008")  # 2,000 x 4 / 1e6


LONG = Rates(
    input=D("1.25"),
    output=D("10"),
    cache_read=D("0.125"),
    reasoning=D("12"),
    tiers=(Tier(above_tokens=200_000, input=D("2.5"), output=D("15")),),
)


def test_long_context_tier_applies_to_the_whole_request_once_the_threshold_is_exceeded() -> None:
    at_threshold = cost_of(LONG, Usage(prompt_tokens=200_000, completion_tokens=100))
    over = cost_of(LONG, Usage(prompt_tokens=200_001, completion_tokens=100, cached_tokens=1))

    assert at_threshold.total_usd == D("0.251")  # 200,000 x 1.25 + 100 x 10, / 1e6: base rates
    # 200,000 x 2.5 ; 1 cached x 0.125 (the tier has no cache rate: base cache rate) ; 100 x 15
    assert parts(over) == (D("0.5"), D("0.000000125"), D("0"), D("0.0015"), D("0.501500125"))


def test_tier_without_rates_falls_back_to_the_tiers_own_input_and_output() -> None:
    rates = Rates(input=D("1"), output=D("2"), tiers=(Tier(above_tokens=100, input=D("3"), output=D("5")),))
    usage = Usage(
        prompt_tokens=1_000, completion_tokens=1_000, cached_tokens=100, cache_creation_tokens=100, reasoning_tokens=10
    )

    cost = cost_of(rates, usage)

    # no cache / reasoning rates anywhere: cached and written at the tier input 3, reasoning at the tier output 5
    assert parts(cost) == (D("0.0024"), D("0.0003"), D("0.0003"), D("0.005"), D("0.008"))


def test_highest_exceeded_tier_wins() -> None:
    rates = Rates(
        input=D("1"),
        output=D("1"),
        tiers=(Tier(above_tokens=128_000, input=D("3")), Tier(above_tokens=32_000, input=D("2"))),
    )

    costs = [cost_of(rates, Usage(prompt_tokens=n, completion_tokens=0)).input_usd for n in (32_000, 32_001, 128_001)]

    assert costs == [D("0.032"), D("0.064002"), D("0.384003")]


def test_batch_uses_batch_rates_and_bills_reasoning_at_batch_output() -> None:
    rates = Rates(
        input=D("2"),
        output=D("8"),
        reasoning=D("20"),
        cache_read=D("0.5"),
        batch_input=D("1"),
        batch_output=D("4"),
        batch_cache_write=D("1.5"),
    )
    usage = Usage(
        prompt_tokens=10_000,
        completion_tokens=1_000,
        cached_tokens=2_000,
        cache_creation_tokens=1_000,
        reasoning_tokens=600,
        batch=True,
    )

    cost = cost_of(rates, usage)

    # uncached 7,000 x 1 ; cached 2,000 x 0.5 (no batch cache-read rate: the standard one, no discount on
    # cache hits) ; written 1,000 x 1.5 ; output 1,000 x 4 (reasoning too)
    assert parts(cost) == (D("0.007"), D("0.001"), D("0.0015"), D("0.004"), D("0.0135"))


def test_batch_cache_reads_without_any_cache_read_rate_pay_the_batch_input_rate() -> None:
    rates = Rates(input=D("2"), output=D("8"), batch_input=D("1"), batch_output=D("4"))
    usage = Usage(prompt_tokens=10_000, completion_tokens=0, cached_tokens=2_000, batch=True)

    cost = cost_of(rates, usage)

    assert parts(cost) == (D("0.008"), D("0.002"), D("0"), D("0"), D("0.010"))


def test_batch_request_without_batch_rates_pays_the_standard_rates() -> None:
    rates = Rates(input=D("2"), output=D("8"))
    usage = Usage(prompt_tokens=1_000, completion_tokens=1_000, batch=True)

    assert cost_of(rates, usage) == cost_of(rates, Usage(prompt_tokens=1_000, completion_tokens=1_000))


def test_batch_long_context_uses_the_tiers_batch_rates_only() -> None:
    rates = Rates(
        input=D("2"),
        output=D("8"),
        batch_input=D("1"),
        batch_output=D("4"),
        tiers=(
            Tier(above_tokens=100, input=D("10"), output=D("40")),
            Tier(above_tokens=1_000, batch_input=D("3"), batch_output=D("6"), batch_cache_read=D("0.3")),
        ),
    )

    standard_tier_only = cost_of(rates, Usage(prompt_tokens=500, completion_tokens=10, batch=True))
    batch_tier = cost_of(rates, Usage(prompt_tokens=2_000, completion_tokens=10, cached_tokens=1_000, batch=True))
    not_batch = cost_of(rates, Usage(prompt_tokens=2_000, completion_tokens=10))

    assert standard_tier_only.total_usd == D("0.00054")  # 500 x 1 + 10 x 4: standard tiers ignored
    assert parts(batch_tier) == (D("0.003"), D("0.0003"), D("0"), D("0.00006"), D("0.00336"))
    assert not_batch.total_usd == D("0.0204")  # 2,000 x 10 + 10 x 40: batch-only tier ignored


def test_exact_to_the_last_digit() -> None:
    cost = cost_of(Rates(input=D("0.123456789012"), output=D("0.000000000001")), Usage(987_654_321, 123_456_789))

    assert cost.input_usd == D("121.932631124487120852")
    assert cost.output_usd == D("1.23456789E-10")


@pytest.mark.parametrize(
    "usage",
    [
        Usage(prompt_tokens=10, completion_tokens=0, cached_tokens=6, cache_creation_tokens=5),
        Usage(prompt_tokens=10, completion_tokens=3, reasoning_tokens=4),
        Usage(prompt_tokens=-1, completion_tokens=0),
        Usage(prompt_tokens=10, completion_tokens=0, cached_tokens=-1),
        Usage(prompt_tokens=1.5, completion_tokens=0),
        Usage(prompt_tokens=True, completion_tokens=0),
    ],
)
def test_invalid_parts_raise_value_error(usage: Usage) -> None:
    with pytest.raises(ValueError):
        cost_of(Rates(input=D("1"), output=D("1")), usage)


def test_tiers_from_json_reads_decimal_strings_and_sorts() -> None:
    tiers = tiers_from_json([{"above_tokens": 272000, "input": "5", "batch_input": "2.5"}, {"above_tokens": 0}])

    assert tiers == (Tier(above_tokens=0), Tier(above_tokens=272_000, input=D("5"), batch_input=D("2.5")))


def test_quantize_usd_rounds_half_to_even_at_12_places() -> None:
    assert quantize_usd(D("0.0000000000005")) == D("0")
    assert quantize_usd(D("0.0000000000015")) == D("0.000000000002")
    assert quantize_usd(D("121.932631124487120852")) == D("121.932631124487")
    assert format_usd(quantize_usd(D("0.002475"))) == "0.002475"
    assert format_usd(D("0E-12")) == "0"


def test_long_batch_cache_reads_fall_back_to_the_long_context_standard_cache_read_rate() -> None:
    # gemini-2.5-pro's shape: batch rates above 200K, a standard cache-read rate above 200K, no batch one.
    rates = Rates(
        input=D("1.25"),
        output=D("10"),
        cache_read=D("0.125"),
        batch_input=D("0.625"),
        batch_output=D("5"),
        tiers=(
            Tier(
                above_tokens=200_000,
                input=D("2.5"),
                output=D("15"),
                cache_read=D("0.25"),
                batch_input=D("1.25"),
                batch_output=D("7.5"),
            ),
        ),
    )
    usage = Usage(prompt_tokens=230_000, completion_tokens=1_000, cached_tokens=20_000, batch=True)

    cost = cost_of(rates, usage)

    # uncached 210,000 x 1.25 ; cached 20,000 x 0.25 (the tier's standard cache read) ; output 1,000 x 7.5
    assert parts(cost) == (D("0.2625"), D("0.005"), D("0"), D("0.0075"), D("0.275"))
