"""``cost_of`` agrees with litellm's own ``cost_per_token`` on the models litellm knows.

Every entry of litellm's bundled map is converted in memory by ``pricing.model_map.price_fields``
(the very function ``sync_prices`` stores), priced by ``pricing.calculator.cost_of`` and by
``litellm.cost_per_token`` for several usage shapes, and the totals must agree to a relative 1e-9
(absolute 1e-15 near zero). The sample is the whole map, sorted by name: every chat, completion,
embedding and responses model, so every long-context (threshold or ``tiered_pricing``) model and
every model with cache prices is in it.

Usage shapes per model: plain; a cached share; cache writes (with reads); reasoning; batch (with
cache writes and reasoning); batch with a cached share; and per long-context tier: exactly at the
threshold, one token over it, and well over it with cached, cache-write and reasoning tokens, both
normal and batch. off_peak_pricing is not modelled (we bill the standard rate), so litellm prices
at a pinned peak moment.

Exclusions, each by an explicit rule and counted (see docs/adr/0002-price-catalog.md):

- M1 mode: entries whose mode is not chat / completion / embedding / responses (images, audio,
  video, rerank, search, ...) are priced by litellm per image / second / character / query.
- M2 github_copilot: litellm's provider lookup for these runs a GitHub device login (network).
- M3 renamed: keys litellm can price only when told the provider, and then prices the different
  map entry ``<provider>/<key>`` instead of this one.
- S1 perplexity: litellm's perplexity calculator bills every prompt token at the flat input rate
  (no cache, no long-context prices); shapes with cache tokens or a long prompt are skipped.
- S2 batch cache: a batch request with cached tokens for a model that has neither a batch input
  price (for that prompt size) nor a cache-read price: litellm's fallback bills those cached tokens
  at $0; we bill them at the batch input rate, like any unpublished cache price.
- S3 batch lookup: litellm's batch calculator does not price this entry: its lookup (provider
  guess, then ``get_model_info``) fails, so it answers $0, or lands on another map entry with other
  prices (e.g. ``moonshotai.kimi-k2.5`` -> ``bedrock/moonshotai.kimi-k2.5``).
- S4 batch table: a model priced only by a ``tiered_pricing`` table: litellm's batch calculator
  ignores tables and answers $0; we bill its batch requests at the table's standard rates.
"""

import os
import re
import types
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from pricing.calculator import Rates, Usage, cost_of
from pricing.model_map import FIREWORKS_CACHE_READ_RATIO, INCLUSIVE_THRESHOLD_PROVIDERS, price_fields

# litellm's own pydantic models warn at import; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning", "ignore:Items.*ReadOnly:UserWarning")

COMPARED_MODES = {"chat", "completion", "embedding", "responses"}
PEAK = datetime(2026, 1, 7, 8, 0, tzinfo=UTC)  # a Wednesday 08:00 UTC: outside every off-peak window
REL_TOL = Decimal("1e-9")
ABS_TOL = Decimal("1e-15")


def _litellm():
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before the import, and the word True
    import litellm

    return litellm


def usage_shapes(fields: dict) -> list[tuple[str, Usage]]:
    shapes = [
        ("plain", Usage(1234, 567)),
        ("cached", Usage(10_000, 800, cached_tokens=6_000)),
        ("cache_write", Usage(10_000, 800, cached_tokens=2_000, cache_creation_tokens=3_000)),
        ("reasoning", Usage(3_000, 2_000, reasoning_tokens=1_500)),
        ("batch", Usage(50_000, 2_000, cache_creation_tokens=1_000, reasoning_tokens=500, batch=True)),
        ("batch_cached", Usage(50_000, 2_000, cached_tokens=10_000, batch=True)),
    ]
    for tier in fields["tiers"]:
        above = tier["above_tokens"]
        long = {"cached_tokens": 20_000, "cache_creation_tokens": 5_000, "reasoning_tokens": 400}
        shapes += [
            (f"at_{above}", Usage(above, 100)),
            (f"over_{above}", Usage(above + 1, 100)),
            (f"long_{above}", Usage(above + 30_000, 1_000, **long)),
            (f"batch_long_{above}", Usage(above + 30_000, 1_000, batch=True, **long)),
        ]
    return shapes


@dataclass
class Agreement:
    models: int = 0  # models compared on at least one shape
    comparisons: int = 0
    mismatches: list = field(default_factory=list)
    excluded_models: Counter = field(default_factory=Counter)
    excluded_shapes: Counter = field(default_factory=Counter)
    compared_by_mode: Counter = field(default_factory=Counter)
    compared_shapes: Counter = field(default_factory=Counter)
    compared_keys: set = field(default_factory=set)


def _batch_input_published(entry: dict, usage: Usage, inclusive: bool) -> bool:
    """Whether litellm finds a batch input price for this prompt size (else it bills half price and
    its cached tokens at the cache-read price, $0 when there is none)."""
    for key, value in entry.items():
        match = re.fullmatch(r"input_cost_per_token_above_(\d+)(k?)_tokens_batches", key)
        if match and value is not None:
            threshold = int(match.group(1)) * (1000 if match.group(2) else 1)
            if usage.prompt_tokens > threshold or (inclusive and usage.prompt_tokens == threshold):
                return True
    return entry.get("input_cost_per_token_batches") is not None


def _shape_exclusion(fields: dict, entry: dict, name: str, usage: Usage) -> str | None:
    if fields["provider"] == "perplexity" and (
        usage.cached_tokens or usage.cache_creation_tokens or name.startswith(("at_", "over_", "long_", "batch_long"))
    ):
        return "S1 perplexity"
    inclusive = fields["provider"] in INCLUSIVE_THRESHOLD_PROVIDERS
    if (
        usage.batch
        and usage.cached_tokens
        and entry.get("cache_read_input_token_cost") is None
        and not _batch_input_published(entry, usage, inclusive)
    ):
        return "S2 batch cache"
    return None


def _batch_exclusion(litellm, key: str, entry: dict, provider: str | None) -> str | None:
    if entry.get("tiered_pricing") and entry.get("input_cost_per_token") is None:
        return "S4 batch table"
    try:
        _, batch_provider, _, _ = litellm.get_llm_provider(model=key, custom_llm_provider=provider)
        info = litellm.get_model_info(model=key, custom_llm_provider=batch_provider)
    except Exception:
        return "S3 batch lookup"
    if info["key"] != key:
        other = litellm.model_cost.get(info["key"], {})
        if {k: v for k, v in other.items() if "cost" in k} != {k: v for k, v in entry.items() if "cost" in k}:
            return "S3 batch lookup"
    return None


@pytest.fixture(scope="module")
def agreement() -> Agreement:
    litellm = _litellm()
    from litellm._internal_context import pinned_billing_time

    def litellm_cost(key: str, mode: str, usage: Usage, provider: str | None) -> Decimal:
        usage_object = litellm.Usage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.prompt_tokens + usage.completion_tokens,
            prompt_tokens_details={
                "cached_tokens": usage.cached_tokens,
                "cache_creation_tokens": usage.cache_creation_tokens,
            },
            completion_tokens_details={"reasoning_tokens": usage.reasoning_tokens},
        )
        call_type = "retrieve_batch" if usage.batch else ("embedding" if mode == "embedding" else "completion")
        with pinned_billing_time(PEAK):
            prompt_usd, completion_usd = litellm.cost_per_token(
                model=key,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                usage_object=usage_object,
                call_type=call_type,
                **({"custom_llm_provider": provider} if provider else {}),
            )
        return Decimal(repr(prompt_usd)) + Decimal(repr(completion_usd))

    result = Agreement()
    model_map = litellm.model_cost
    for key in sorted(model_map):
        entry = model_map[key]
        fields = price_fields(key, entry)
        if fields is None:
            continue  # not priced per token: the sync skips it too
        if fields["mode"] not in COMPARED_MODES:
            result.excluded_models["M1 mode"] += 1
            continue
        if fields["provider"] == "github_copilot":
            result.excluded_models["M2 github_copilot"] += 1
            continue
        provider = None
        try:
            litellm_cost(key, fields["mode"], Usage(10, 10), None)
        except Exception:  # litellm cannot find the provider (or entry) from the key alone
            provider = fields["provider"]
            if f"{provider}/{key}" in model_map:
                result.excluded_models["M3 renamed"] += 1
                continue
        batch_rule = _batch_exclusion(litellm, key, entry, provider)
        rates = Rates.from_price(types.SimpleNamespace(**fields))
        compared = False
        for name, usage in usage_shapes(fields):
            rule = (usage.batch and batch_rule) or _shape_exclusion(fields, entry, name, usage)
            if rule:
                result.excluded_shapes[rule] += 1
                continue
            ours = cost_of(rates, usage).total_usd
            theirs = litellm_cost(key, fields["mode"], usage, provider)
            result.comparisons += 1
            result.compared_shapes[re.sub(r"_\d+$", "", name)] += 1
            compared = True
            if abs(ours - theirs) > max(abs(theirs) * REL_TOL, ABS_TOL):
                result.mismatches.append((key, name, usage, ours, theirs))
        if compared:
            result.models += 1
            result.compared_by_mode[fields["mode"]] += 1
            result.compared_keys.add(key)
    print(  # the figures quoted in the issue note (pytest -s)
        f"\nlitellm agreement: {result.models} models, {result.comparisons} comparisons, "
        f"shapes {dict(result.compared_shapes)}, by mode {dict(result.compared_by_mode)}; "
        f"excluded models {dict(result.excluded_models)}, excluded shapes {dict(result.excluded_shapes)}"
    )
    return result


def test_cost_of_agrees_with_litellm_cost_per_token(agreement: Agreement) -> None:
    shown = "\n".join(
        f"{key} [{name}] {usage}: ours {ours} != litellm {theirs}"
        for key, name, usage, ours, theirs in agreement.mismatches[:25]
    )
    assert not agreement.mismatches, f"{len(agreement.mismatches)} disagreements:\n{shown}"


def test_the_sample_is_broad_and_exclusions_are_few(agreement: Agreement) -> None:
    litellm = _litellm()
    token_priced = {key for key, entry in litellm.model_cost.items() if price_fields(key, entry) is not None}
    eligible = {key for key in token_priced if price_fields(key, litellm.model_cost[key])["mode"] in COMPARED_MODES}
    assert agreement.models >= 0.9 * len(eligible)
    assert agreement.compared_by_mode["chat"] > 2000
    assert agreement.compared_by_mode["completion"] >= 10
    assert agreement.compared_by_mode["embedding"] >= 50
    # S2 concerns one shape (batch with cached tokens) of models without cache or batch prices.
    assert agreement.excluded_shapes["S2 batch cache"] <= agreement.models
    others = sum(agreement.excluded_shapes.values()) - agreement.excluded_shapes["S2 batch cache"]
    assert others < 0.05 * agreement.comparisons
    assert sum(agreement.excluded_models.values()) - agreement.excluded_models["M1 mode"] < 0.02 * len(eligible)
    # Every long-context model is compared across its thresholds, every cache-priced model on caches.
    long_context = {key for key in eligible if price_fields(key, litellm.model_cost[key])["tiers"]}
    range_tables = {key for key in eligible if litellm.model_cost[key].get("tiered_pricing")}
    cache_priced = {key for key in eligible if litellm.model_cost[key].get("cache_read_input_token_cost") is not None}
    assert len(range_tables) >= 40
    assert len(long_context - agreement.compared_keys) <= 0.1 * len(long_context)
    assert range_tables <= agreement.compared_keys
    assert len(cache_priced - agreement.compared_keys) <= 0.1 * len(cache_priced)
    assert agreement.compared_shapes["at"] == agreement.compared_shapes["over"] > 300
    assert agreement.compared_shapes["batch"] > 2000


def test_provider_rules_mirror_litellm() -> None:
    """The mapping's copies of litellm's provider rules are still litellm's."""
    _litellm()
    from litellm import constants
    from litellm.litellm_core_utils.llm_cost_calc import utils

    assert Decimal(repr(constants.FIREWORKS_AI_DEFAULT_CACHE_READ_RATE_RATIO)) == FIREWORKS_CACHE_READ_RATIO
    assert frozenset(utils._INCLUSIVE_THRESHOLD_PROVIDERS) == INCLUSIVE_THRESHOLD_PROVIDERS


SYNTHETIC = {
    "several thresholds": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 4e-06,
        "cache_read_input_token_cost": 1e-07,
        "output_cost_per_reasoning_token": 5e-06,
        "input_cost_per_token_above_128k_tokens": 2e-06,
        "output_cost_per_token_above_128k_tokens": 6e-06,
        "input_cost_per_token_above_200k_tokens": 3e-06,
        "cache_read_input_token_cost_above_200k_tokens": 3e-07,
    },
    "inclusive, zero cache price": {
        "litellm_provider": "xai",
        "mode": "chat",
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 0.0,
        "input_cost_per_token_above_100k_tokens": 4e-06,
        "cache_creation_input_token_cost_above_100k_tokens": 5e-06,
    },
}


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_shapes_the_map_lacks_today_agree_with_litellms_generic_calculator(name: str) -> None:
    """Rules the bundled map does not exercise yet (several thresholds, ...), against the same
    litellm code path, with the entry handed over as model_info."""
    _litellm()
    import litellm
    from litellm.litellm_core_utils.llm_cost_calc.utils import generic_cost_per_token

    entry = SYNTHETIC[name]
    fields = price_fields(name, entry)
    rates = Rates.from_price(types.SimpleNamespace(**fields))
    for prompt in (1_000, 100_000, 128_000, 128_001, 200_000, 200_001, 400_000):
        usage = Usage(
            prompt, 3_000, cached_tokens=prompt // 4, cache_creation_tokens=prompt // 8, reasoning_tokens=1_000
        )
        usage_object = litellm.Usage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.prompt_tokens + usage.completion_tokens,
            prompt_tokens_details={
                "cached_tokens": usage.cached_tokens,
                "cache_creation_tokens": usage.cache_creation_tokens,
            },
            completion_tokens_details={"reasoning_tokens": usage.reasoning_tokens},
        )
        prompt_usd, completion_usd = generic_cost_per_token(
            model=name, usage=usage_object, custom_llm_provider=entry["litellm_provider"], model_info=entry
        )
        theirs = Decimal(repr(prompt_usd)) + Decimal(repr(completion_usd))
        ours = cost_of(rates, usage).total_usd
        assert abs(ours - theirs) <= max(abs(theirs) * REL_TOL, ABS_TOL), (prompt, ours, theirs)
