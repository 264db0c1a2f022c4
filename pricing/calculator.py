"""Turn a usage breakdown into a Decimal cost. Pure: no database, no litellm, no floats.

Token convention (OpenAI / litellm, see DESIGN.md): ``cached_tokens`` and ``cache_creation_tokens``
are *part of* ``prompt_tokens``; ``reasoning_tokens`` are *part of* ``completion_tokens``.

Rates are USD per 1,000,000 tokens. The rules, which match litellm's ``cost_per_token`` for the
models in its map:

- uncached input  = (prompt - cached - cache_creation) x input rate
- cached input    = cached x cache-read rate (input rate when the model publishes none)
- cache creation  = cache_creation x cache-write rate (input rate when none)
- output          = (completion - reasoning) x output rate + reasoning x reasoning rate
                    (output rate when none)
- long context: once ``prompt_tokens`` exceeds a tier's ``above_tokens``, the highest such tier's
  rates apply to the *whole* request; a rate the tier leaves out falls back to the base rate of the
  same kind (cache rates then to the tier's input rate).
- batch: a batch request uses the batch input / output rates where the model has them.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

PER_TOKENS = Decimal(1_000_000)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    batch: bool = False


@dataclass(frozen=True, slots=True)
class Tier:
    """Rates (USD / 1M tokens) that apply once prompt_tokens > ``above_tokens``; None = fall back."""

    above_tokens: int
    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Rates:
    """A model's rates in USD / 1M tokens. None means "not published" (see module docstring)."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    batch_input: Decimal | None = None
    batch_output: Decimal | None = None
    tiers: Sequence[Tier] = ()

    @classmethod
    def from_price(cls, price) -> "Rates":
        return cls(
            input=price.input_usd_per_mtok,
            output=price.output_usd_per_mtok,
            cache_read=price.cache_read_usd_per_mtok,
            cache_write=price.cache_write_usd_per_mtok,
            reasoning=price.reasoning_usd_per_mtok,
            batch_input=price.batch_input_usd_per_mtok,
            batch_output=price.batch_output_usd_per_mtok,
            tiers=tiers_from_json(price.tiers),
        )


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """Exact (unrounded) USD amounts; ``total_usd`` is their sum."""

    input_usd: Decimal
    cached_input_usd: Decimal
    cache_creation_usd: Decimal
    output_usd: Decimal

    @property
    def total_usd(self) -> Decimal:
        return self.input_usd + self.cached_input_usd + self.cache_creation_usd + self.output_usd


def tiers_from_json(tiers: list[dict] | None) -> tuple[Tier, ...]:
    def rate(value: object) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    return tuple(
        sorted(
            (
                Tier(
                    above_tokens=int(t["above_tokens"]),
                    input=rate(t.get("input")),
                    output=rate(t.get("output")),
                    cache_read=rate(t.get("cache_read")),
                    cache_write=rate(t.get("cache_write")),
                    reasoning=rate(t.get("reasoning")),
                )
                for t in tiers or ()
            ),
            key=lambda t: t.above_tokens,
        )
    )


def _select_tier(tiers: Sequence[Tier], prompt_tokens: int) -> Tier | None:
    chosen = None
    for tier in tiers:
        if prompt_tokens > tier.above_tokens:
            chosen = tier
    return chosen


def cost_of(rates: Rates, usage: Usage) -> CostBreakdown:
    """Price ``usage`` with ``rates``. Raises ValueError when the token parts exceed their totals."""
    uncached = usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens
    text_output = usage.completion_tokens - usage.reasoning_tokens
    if min(uncached, text_output, usage.cached_tokens, usage.cache_creation_tokens, usage.reasoning_tokens) < 0:
        raise ValueError("cached + cache_creation must not exceed prompt_tokens, reasoning not completion_tokens")

    input_rate, output_rate = rates.input, rates.output
    cache_read, cache_write, reasoning = rates.cache_read, rates.cache_write, rates.reasoning
    tier = _select_tier(rates.tiers, usage.prompt_tokens)
    if tier is not None:
        input_rate = tier.input if tier.input is not None else input_rate
        output_rate = tier.output if tier.output is not None else output_rate
        cache_read = tier.cache_read if tier.cache_read is not None else cache_read
        cache_write = tier.cache_write if tier.cache_write is not None else cache_write
        reasoning = tier.reasoning if tier.reasoning is not None else reasoning
    if usage.batch:
        input_rate = rates.batch_input if rates.batch_input is not None else input_rate
        output_rate = rates.batch_output if rates.batch_output is not None else output_rate

    # Rates carry up to 24 digits and token counts up to 19: keep every product exact.
    with localcontext() as ctx:
        ctx.prec = 60
        return CostBreakdown(
            input_usd=uncached * input_rate / PER_TOKENS,
            cached_input_usd=usage.cached_tokens * (input_rate if cache_read is None else cache_read) / PER_TOKENS,
            cache_creation_usd=usage.cache_creation_tokens
            * (input_rate if cache_write is None else cache_write)
            / PER_TOKENS,
            output_usd=(
                text_output * output_rate + usage.reasoning_tokens * (output_rate if reasoning is None else reasoning)
            )
            / PER_TOKENS,
        )


USD_QUANTUM = Decimal("0.000000000001")  # the ledger stores USD with 12 decimal places


def quantize_usd(amount: Decimal) -> Decimal:
    """Round an exact amount to the ledger's 12 decimal places (banker's rounding, no bias in sums)."""
    return amount.quantize(USD_QUANTUM, rounding=ROUND_HALF_EVEN)


def format_usd(amount: Decimal | None) -> str | None:
    """Money for JSON: a plain decimal string without exponent or trailing zeros ("0.002475", "0")."""
    if amount is None:
        return None
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
