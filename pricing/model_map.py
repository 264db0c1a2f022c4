"""Convert entries of litellm's model map (``litellm.model_cost``) into ModelPrice field values.

Pure: takes the entry dict, imports neither litellm nor the ORM, so the agreement test can convert
the whole map in memory with exactly the function ``prices_sync`` uses.

The map holds per-token float prices; we store USD per 1M tokens as Decimal: ``Decimal(repr(x))``
(the shortest decimal that round-trips the float, never the float's binary expansion) times 10^6,
quantized to the column's 12 decimal places (the map's worst case loses ~2e-16 relative).

Where litellm's calculator resolves a rate differently from ``pricing.calculator``'s generic rules,
the difference is encoded *here*, as explicit rates, so the calculator stays one simple set of
rules (see docs/adr/0002-price-catalog.md):

- ``*_above_<N>k_tokens`` threshold keys become a tier ``above_tokens = N`` (the map has one
  threshold per model; several would each become a tier, a missing rate taken from the tier
  below, as litellm applies them); for providers that bill the higher price from the threshold
  itself (xAI, ``>=``) ``above_tokens = N - 1``.
- ``tiered_pricing`` range tables (all-or-nothing, ``range_start < prompt <= range_end``, the last
  tier above the last range): the tier starting at 0 becomes the base rates, every other tier a
  tier with ``above_tokens = range_start``. litellm resolves a tier's missing cache rates to the
  *tier's* input rate and a missing reasoning rate to the *tier's* output rate, so those are
  written into each tier explicitly.
- batch: the ``*_batches`` rates (and their threshold keys) when published; otherwise half the
  standard rates, which is what litellm bills for a batch request of such a model. A missing batch
  cache-read rate is left to the calculator's fallback to the standard cache-read rate (litellm
  >= 1.110), except for a model with no cache-read price at all (see ``price_fields``).
- fireworks_ai: an unpublished cache-read rate is half the input rate (litellm's default there).
- xAI: litellm bills xAI reasoning tokens at the output rate, so no reasoning rate is stored.
- an output price of 0 falls back to ``output_cost_per_image_token`` (image models billed by
  output tokens), as litellm does.
"""

import re
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

PER_MTOK = Decimal(1_000_000)
RATE_QUANTUM = Decimal("0.000000000001")  # ModelPrice rate columns: 12 decimal places
# litellm.constants.FIREWORKS_AI_DEFAULT_CACHE_READ_RATE_RATIO (the agreement test catches drift).
FIREWORKS_CACHE_READ_RATIO = Decimal("0.5")
# Providers whose long-context price starts at the threshold (litellm _INCLUSIVE_THRESHOLD_PROVIDERS).
INCLUSIVE_THRESHOLD_PROVIDERS = frozenset({"xai"})
# Providers whose reasoning tokens litellm bills at the plain output rate.
REASONING_AT_OUTPUT_PROVIDERS = frozenset({"xai"})
# Documentation entries of the map, not models.
NOT_MODELS = frozenset({"sample_spec"})

_PREFIXES = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cache_read": "cache_read_input_token_cost",
    "cache_write": "cache_creation_input_token_cost",
}
_BATCH = "_batches"
_BATCH_THRESHOLD_KEY = re.compile(
    r"^(?:input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|cache_creation_input_token_cost)"
    r"_above_(\d+)(k?)_tokens_batches$"
)
# Standard threshold keys: one of the four prefixes, _above_<N>[k]_tokens, then nothing, or a
# suffix litellm does not treat as a service tier / batch (e.g. ``_decisions``: same threshold).
_THRESHOLD_KEY = re.compile(
    r"^(?:input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|"
    r"cache_creation_input_token_cost)_above_(?:1hr_above_)?(\d+)(k?)_tokens(.*)$"
)
_NON_STANDARD_SUFFIXES = ("_flex", "_balanced", "_priority", "_fast", "_ultrafast", "_batches", "_auto")


def per_mtok(value: Any) -> Decimal | None:
    """A per-token price from the map (float, int or numeric string) -> USD per 1M tokens."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    return (Decimal(repr(float(value))) * PER_MTOK).quantize(RATE_QUANTUM, rounding=ROUND_HALF_EVEN)


def _half(rate: Decimal | None) -> Decimal | None:
    return None if rate is None else (rate / 2).quantize(RATE_QUANTUM, rounding=ROUND_HALF_EVEN)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2_147_483_647:
        return None
    return value


def _usable_range_tiers(entry: Mapping) -> list[dict]:
    """The ``tiered_pricing`` tiers litellm can price tokens with (a 2-item range and an input rate)."""
    tiers = entry.get("tiered_pricing")
    if not isinstance(tiers, list):
        return []
    return [
        t
        for t in tiers
        if isinstance(t, dict)
        and isinstance(t.get("range"), (list, tuple))
        and len(t["range"]) == 2
        and t.get("input_cost_per_token") is not None
    ]


def is_token_priced(entry: Mapping) -> bool:
    """Whether an entry carries per-token prices (the sync skips the others)."""
    return (
        entry.get("input_cost_per_token") is not None
        or entry.get("output_cost_per_token") is not None
        or bool(_usable_range_tiers(entry))
    )


def _thresholds(entry: Mapping, *, batch: bool) -> dict[int, list[str]]:
    """Long-context thresholds in tokens -> how the keys spell them (``200k``), from the standard
    ``*_above_<N>_tokens`` keys or from the ``*_above_<N>_tokens_batches`` keys."""
    found: dict[int, list[str]] = {}
    for key, value in entry.items():
        match = (_BATCH_THRESHOLD_KEY if batch else _THRESHOLD_KEY).match(key)
        if match is None or value is None:
            continue
        if not batch and match.group(3).endswith(_NON_STANDARD_SUFFIXES):
            continue
        labels = found.setdefault(int(match.group(1)) * (1000 if match.group(2) else 1), [])
        if match.group(1) + match.group(2) not in labels:
            labels.append(match.group(1) + match.group(2))
    return found


def _rate_at(entry: Mapping, prefix: str, labels: list[str], suffix: str = "") -> Decimal | None:
    return _first(*(per_mtok(entry.get(f"{prefix}_above_{label}_tokens{suffix}")) for label in labels))


def _batch_rates(entry: Mapping, tiered: Mapping[str, Decimal] | None = None) -> dict[str, Decimal | None] | None:
    """What litellm's batch calculator bills per token type, given the long-context batch rates in
    effect (``tiered``, by key prefix; a prefix without one uses its flat ``*_batches`` rate).

    None when the model has no flat price for batch to start from (range-table-only models)."""

    def batch_key(prefix: str) -> Decimal | None:
        return _first((tiered or {}).get(prefix), per_mtok(entry.get(f"{prefix}{_BATCH}")))

    flat_input = per_mtok(entry.get("input_cost_per_token"))
    flat_output = per_mtok(entry.get("output_cost_per_token"))
    batch_input = batch_key(_PREFIXES["input"])
    if batch_input is None and flat_input is None and _usable_range_tiers(entry):
        # litellm's batch path ignores range tables and would bill these models at $0.
        return None
    if batch_input is not None:
        rates = {
            "batch_input": batch_input,
            "batch_cache_read": batch_key(_PREFIXES["cache_read"]),
            "batch_cache_write": batch_key(_PREFIXES["cache_write"]),
        }
    elif flat_input:
        # A published write price of 0 is a price (litellm bills those writes at $0), not "none".
        cache_write = _first(per_mtok(entry.get("cache_creation_input_token_cost")), flat_input)
        rates = {
            "batch_input": _half(flat_input),
            # litellm bills cached tokens at $0 here when the model publishes no cache-read price;
            # we bill them at the batch input rate (the rule for unpublished cache prices).
            "batch_cache_read": _half(per_mtok(entry.get("cache_read_input_token_cost"))),
            "batch_cache_write": _half(cache_write),
        }
    else:  # an input price of 0: litellm bills the whole prompt at 0
        rates = {"batch_input": Decimal(0), "batch_cache_read": None, "batch_cache_write": None}
    batch_output = batch_key(_PREFIXES["output"])
    if batch_output is None:
        batch_output = _half(flat_output) if flat_output is not None else Decimal(0)
    rates["batch_output"] = batch_output
    return rates


def _rate_str(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _tier_json(above_tokens: int, rates: Mapping[str, Decimal | None]) -> dict:
    return {"above_tokens": above_tokens, **{key: _rate_str(value) for key, value in rates.items()}}


def _range_table(entry: Mapping, flat_output: Decimal) -> tuple[dict[str, Decimal | None], list[dict]]:
    """Base rates and tiers for a ``tiered_pricing`` table (see the module docstring)."""
    converted = []
    for tier in sorted(_usable_range_tiers(entry), key=lambda t: t["range"][0]):
        input_rate = per_mtok(tier["input_cost_per_token"])
        output_rate = per_mtok(tier.get("output_cost_per_token"))
        if output_rate is None:
            output_rate = flat_output
        converted.append(
            (
                int(tier["range"][0]),
                {
                    "input": input_rate,
                    "output": output_rate,
                    "cache_read": _first(per_mtok(tier.get("cache_read_input_token_cost")), input_rate),
                    "cache_write": _first(per_mtok(tier.get("cache_creation_input_token_cost")), input_rate),
                    "reasoning": _first(per_mtok(tier.get("output_cost_per_reasoning_token")), output_rate),
                },
            )
        )
    # Every table of the map is contiguous from 0, so its first tier is the model's base price.
    (_, base), rest = converted[0], converted[1:]
    return base, [_tier_json(start, rates) for start, rates in rest]


def _first(*values: Decimal | None) -> Decimal | None:
    return next((v for v in values if v is not None), None)


def price_fields(model: str, entry: Mapping) -> dict[str, Any] | None:
    """ModelPrice field values (without source / effective dates) for one map entry, or None when
    the entry is not priced per token."""
    if model in NOT_MODELS or not is_token_priced(entry):
        return None
    provider = str(entry.get("litellm_provider") or "")
    input_rate = per_mtok(entry.get("input_cost_per_token")) or Decimal(0)
    output_rate = per_mtok(entry.get("output_cost_per_token"))
    if not output_rate:  # litellm: a 0 / missing output price falls back to the image-token price
        output_rate = _first(per_mtok(entry.get("output_cost_per_image_token")), output_rate) or Decimal(0)
    cache_read = per_mtok(entry.get("cache_read_input_token_cost"))
    if cache_read is None and provider == "fireworks_ai" and entry.get("input_cost_per_token") is not None:
        cache_read = (input_rate * FIREWORKS_CACHE_READ_RATIO).quantize(RATE_QUANTUM, rounding=ROUND_HALF_EVEN)
    reasoning = per_mtok(entry.get("output_cost_per_reasoning_token"))
    if provider in REASONING_AT_OUTPUT_PROVIDERS:
        reasoning = None
    fields: dict[str, Any] = {
        "model": model,
        "provider": provider,
        "mode": str(entry.get("mode") or "")[:32],
        "input_usd_per_mtok": input_rate,
        "output_usd_per_mtok": output_rate,
        "cache_read_usd_per_mtok": cache_read,
        "cache_write_usd_per_mtok": per_mtok(entry.get("cache_creation_input_token_cost")),
        "reasoning_usd_per_mtok": reasoning,
        "batch_input_usd_per_mtok": None,
        "batch_output_usd_per_mtok": None,
        "batch_cache_read_usd_per_mtok": None,
        "batch_cache_write_usd_per_mtok": None,
        "tiers": [],
        "max_input_tokens": _int_or_none(entry.get("max_input_tokens")),
        "max_output_tokens": _int_or_none(entry.get("max_output_tokens")),
        "capabilities": {k: v for k, v in sorted(entry.items()) if k.startswith("supports_") and isinstance(v, bool)},
    }
    inclusive = provider in INCLUSIVE_THRESHOLD_PROVIDERS

    if _usable_range_tiers(entry):
        base, tiers = _range_table(entry, output_rate)
        fields.update({f"{key}_usd_per_mtok": value for key, value in base.items()}, tiers=tiers)
    else:
        # litellm applies every threshold crossed, in order, each key falling back to the one before:
        # so a tier's missing rate is the lower tier's (None: the base rate).
        in_effect: dict[str, Decimal | None] = dict.fromkeys(_PREFIXES)
        for tokens, labels in sorted(_thresholds(entry, batch=False).items()):
            in_effect = {
                kind: _first(_rate_at(entry, prefix, labels), in_effect[kind]) for kind, prefix in _PREFIXES.items()
            }
            if any(rate is not None for rate in in_effect.values()):
                fields["tiers"].append(_tier_json(tokens - 1 if inclusive else tokens, in_effect))

    below = _batch_rates(entry)
    if below is not None:
        fields.update({f"{key}_usd_per_mtok": value for key, value in below.items()})
        crossed: dict[str, Decimal] = {}
        for tokens, labels in sorted(_thresholds(entry, batch=True).items()):
            for prefix in _PREFIXES.values():
                rate = _rate_at(entry, prefix, labels, _BATCH)
                if rate is not None:
                    crossed[prefix] = rate
            above = _batch_rates(entry, crossed)
            # The batch path resolves a missing cache-write rate, and a missing cache-read rate of a
            # model with no standard cache-read price, to the batch input rate *of the tier*: write it
            # explicitly, else the calculator would fall back to the base batch rate. (With a standard
            # cache-read price, the calculator's own fallback to it is what litellm bills.)
            if above["batch_cache_write"] is None:
                above["batch_cache_write"] = above["batch_input"]
            if above["batch_cache_read"] is None and fields["cache_read_usd_per_mtok"] is None:
                above["batch_cache_read"] = above["batch_input"]
            _merge_tier(fields["tiers"], tokens - 1 if inclusive else tokens, above)
    return fields


def _merge_tier(tiers: list[dict], above_tokens: int, rates: Mapping[str, Decimal | None]) -> None:
    for tier in tiers:
        if tier["above_tokens"] == above_tokens:
            tier.update({key: _rate_str(value) for key, value in rates.items()})
            return
    tiers.append(_tier_json(above_tokens, rates))
    tiers.sort(key=lambda t: t["above_tokens"])
