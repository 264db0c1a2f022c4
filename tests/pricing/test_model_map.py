"""pricing.model_map: how a litellm map entry becomes ModelPrice fields (the rules the sync applies)."""

from decimal import Decimal as D

from pricing.model_map import per_mtok, price_fields


def test_per_token_floats_become_exact_usd_per_million() -> None:
    assert per_mtok(2.5e-06) == D("2.5")
    assert per_mtok(1.5000020000000002e-05) == D("15.000020000000")  # float noise past 12 places rounds away
    assert per_mtok(3e-18) == D("0.000000000003")  # the smallest rate the 12-place columns hold
    assert per_mtok(0) == D(0)
    assert per_mtok(None) is None
    assert per_mtok(True) is None


def test_entries_without_token_prices_are_skipped() -> None:
    assert price_fields("dall-e-3", {"litellm_provider": "openai", "output_cost_per_image": 0.04}) is None
    assert price_fields("sample_spec", {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0}) is None


def test_plain_entry_with_batch_prices() -> None:
    fields = price_fields(
        "gpt-4o",
        {
            "litellm_provider": "openai",
            "mode": "chat",
            "input_cost_per_token": 2.5e-06,
            "output_cost_per_token": 1e-05,
            "cache_read_input_token_cost": 1.25e-06,
            "input_cost_per_token_batches": 1.25e-06,
            "output_cost_per_token_batches": 5e-06,
            "input_cost_per_token_priority": 4.25e-06,
            "max_input_tokens": 128000,
            "max_output_tokens": "unknown",
            "supports_vision": True,
            "supports_pdf_input": False,
        },
    )

    assert fields == {
        "model": "gpt-4o",
        "provider": "openai",
        "mode": "chat",
        "input_usd_per_mtok": D("2.5"),
        "output_usd_per_mtok": D("10"),
        "cache_read_usd_per_mtok": D("1.25"),
        "cache_write_usd_per_mtok": None,
        "reasoning_usd_per_mtok": None,
        "batch_input_usd_per_mtok": D("1.25"),
        "batch_output_usd_per_mtok": D("5"),
        "batch_cache_read_usd_per_mtok": None,  # litellm: cached tokens of a batch at the batch input rate
        "batch_cache_write_usd_per_mtok": None,
        "tiers": [],
        "max_input_tokens": 128000,
        "max_output_tokens": None,
        "capabilities": {"supports_pdf_input": False, "supports_vision": True},
    }


def test_without_batch_prices_batch_is_half_price() -> None:
    fields = price_fields(
        "m",
        {
            "input_cost_per_token": 3e-06,
            "output_cost_per_token": 1.5e-05,
            "cache_read_input_token_cost": 3e-07,
            "cache_creation_input_token_cost": 3.75e-06,
        },
    )

    assert [fields[f"batch_{kind}_usd_per_mtok"] for kind in ("input", "output", "cache_read", "cache_write")] == [
        D("1.5"),
        D("7.5"),
        D("0.15"),
        D("1.875"),
    ]


def test_threshold_keys_become_one_tier_exclusive_or_inclusive() -> None:
    entry = {
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
        "cache_read_input_token_cost_above_200k_tokens": 6e-07,
        "input_cost_per_token_above_200k_tokens_priority": 9e-06,  # a service tier: not modelled
        "input_cost_per_token_batches": 1.5e-06,
        "output_cost_per_token_batches": 7.5e-06,
        "input_cost_per_token_above_200k_tokens_batches": 3e-06,
    }

    anthropic = price_fields("claude", {**entry, "litellm_provider": "anthropic"})
    xai = price_fields("grok", {**entry, "litellm_provider": "xai"})

    tier = {"input": "6", "output": "22.5", "cache_read": "0.6", "cache_write": None}
    batch = {"batch_input": "3", "batch_output": "7.5", "batch_cache_read": "3", "batch_cache_write": "3"}
    assert anthropic["tiers"] == [{"above_tokens": 200000, **tier, **batch}]
    assert xai["tiers"] == [{"above_tokens": 199999, **tier, **batch}]  # xAI bills from the threshold itself


def test_range_table_first_tier_is_the_base_and_tiers_spell_out_their_fallbacks() -> None:
    fields = price_fields(
        "dashscope/qwen-plus",
        {
            "litellm_provider": "dashscope",
            "tiered_pricing": [
                {"range": [256000.0, 1000000.0], "input_cost_per_token": 1.2e-06, "output_cost_per_token": 1.2e-05},
                {
                    "range": [0, 256000.0],
                    "input_cost_per_token": 4e-07,
                    "output_cost_per_token": 1.2e-06,
                    "output_cost_per_reasoning_token": 4e-06,
                    "cache_read_input_token_cost": 8e-08,
                },
            ],
        },
    )

    base = [fields[f"{k}_usd_per_mtok"] for k in ("input", "output", "cache_read", "cache_write", "reasoning")]
    assert base == [D("0.4"), D("1.2"), D("0.08"), D("0.4"), D("4")]
    assert fields["tiers"] == [
        {
            "above_tokens": 256000,
            "input": "1.2",
            "output": "12",
            "cache_read": "1.2",
            "cache_write": "1.2",
            "reasoning": "12",
        }
    ]
    assert fields["batch_input_usd_per_mtok"] is None  # litellm's batch path ignores tables


def test_provider_rules() -> None:
    fireworks = price_fields(
        "fireworks_ai/m",
        {"litellm_provider": "fireworks_ai", "input_cost_per_token": 9e-07, "output_cost_per_token": 9e-07},
    )
    xai = price_fields(
        "xai/m",
        {
            "litellm_provider": "xai",
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 2e-06,
            "output_cost_per_reasoning_token": 3e-06,
        },
    )
    image = price_fields(
        "gpt-image-1", {"input_cost_per_token": 5e-06, "output_cost_per_token": 0, "output_cost_per_image_token": 4e-05}
    )

    assert fireworks["cache_read_usd_per_mtok"] == D("0.45")  # litellm's fireworks default: half the input rate
    assert xai["reasoning_usd_per_mtok"] is None  # litellm bills xAI reasoning at the output rate
    assert image["output_usd_per_mtok"] == D("40")
