"""Turn a usage breakdown into a Decimal cost. Pure: no database, no litellm, no floats.

Token convention (OpenAI / litellm, see DESIGN.md): ``cached_tokens`` and ``cache_creation_tokens``
are *part of* ``prompt_tokens``; ``reasoning_tokens`` are *part of* ``completion_tokens``.

Rates are USD per 1,000,000 tokens. ``None`` means "not published" and falls back as stated.
The rules (they reproduce litellm's ``cost_per_token`` for the models of its map once
``pricing.model_map`` has converted an entry; see docs/adr/0002-price-catalog.md):

- uncached input  = (prompt - cached - cache_creation) x input rate
- cached input    = cached x cache-read rate (the input rate when none is published)
- cache creation  = cache_creation x cache-write rate (the input rate when none is published);
                    one write rate: 5-minute and 1-hour cache writes are not told apart
- output          = (completion - reasoning) x output rate + reasoning x reasoning rate
                    (the output rate when no reasoning rate is published)
- long context (``tiers``): once ``prompt_tokens`` exceeds a tier's ``above_tokens`` (strictly),
  the highest such tier applies to the *whole* request. A rate the tier leaves out falls back to
  the base rate of the same kind; cache rates and the reasoning rate then fall back as above,
  to the tier's input / output rate. (A provider that bills the tier from the threshold itself,
  ``>=``, is stored as ``above_tokens = threshold - 1``.) Only tiers that declare at least one
  standard rate take part, so a tier holding only batch rates never hides a standard one.
- batch (``usage.batch``): when the price has both batch input and batch output rates, the
  request is billed at batch rates only: input = batch input, output *and reasoning* = batch
  output, cache write = batch cache write (the batch input rate when none), cache read = batch
  cache read, else the standard cache-read rate (no batch discount on cache hits), else the
  batch input rate.
  Long-context tiers then apply through their ``batch_*`` rates (a tier without them leaves
  the base batch rates in place). A price without batch rates bills a batch request like any
  other: no discount is assumed.
- an amount is never rounded here; ``quantize_usd`` rounds for storage / display.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext

PER_TOKENS = Decimal(1_000_000)
ZERO = Decimal(0)

STANDARD_TIER_KEYS = ("input", "output", "cache_read", "cache_write", "reasoning")
BATCH_TIER_KEYS = ("batch_input", "batch_output", "batch_cache_read", "batch_cache_write")


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request (see the module docstring for what is part of what)."""

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
    batch_input: Decimal | None = None
    batch_output: Decimal | None = None
    batch_cache_read: Decimal | None = None
    batch_cache_write: Decimal | None = None

    @property
    def has_standard_rates(self) -> bool:
        return any(getattr(self, key) is not None for key in STANDARD_TIER_KEYS)

    @property
    def has_batch_rates(self) -> bool:
        return any(getattr(self, key) is not None for key in BATCH_TIER_KEYS)


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
    batch_cache_read: Decimal | None = None
    batch_cache_write: Decimal | None = None
    tiers: Sequence[Tier] = ()

    @classmethod
    def from_price(cls, price) -> "Rates":
        """Rates of a :class:`pricing.models.ModelPrice` (or anything with its field names)."""
        return cls(
            input=price.input_usd_per_mtok,
            output=price.output_usd_per_mtok,
            cache_read=price.cache_read_usd_per_mtok,
            cache_write=price.cache_write_usd_per_mtok,
            reasoning=price.reasoning_usd_per_mtok,
            batch_input=price.batch_input_usd_per_mtok,
            batch_output=price.batch_output_usd_per_mtok,
            batch_cache_read=price.batch_cache_read_usd_per_mtok,
            batch_cache_write=price.batch_cache_write_usd_per_mtok,
            tiers=tiers_from_json(price.tiers),
        )

    @property
    def has_batch_rates(self) -> bool:
        return self.batch_input is not None and self.batch_output is not None


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """Exact (unrounded) USD amounts; ``total_usd`` is their sum. Reasoning is part of output."""

    input_usd: Decimal
    cached_input_usd: Decimal
    cache_creation_usd: Decimal
    output_usd: Decimal

    @property
    def total_usd(self) -> Decimal:
        return self.input_usd + self.cached_input_usd + self.cache_creation_usd + self.output_usd


_TIER_RATE_FIELDS = tuple(f.name for f in fields(Tier) if f.name != "above_tokens")


def tiers_from_json(tiers: Sequence[Mapping] | None) -> tuple[Tier, ...]:
    """``ModelPrice.tiers`` (rates as decimal strings, null = fall back) -> sorted :class:`Tier` s."""

    def rate(value: object) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    return tuple(
        sorted(
            (
                Tier(above_tokens=int(t["above_tokens"]), **{key: rate(t.get(key)) for key in _TIER_RATE_FIELDS})
                for t in tiers or ()
            ),
            key=lambda t: t.above_tokens,
        )
    )


def _select_tier(tiers: Sequence[Tier], prompt_tokens: int, *, batch: bool) -> Tier | None:
    """The highest tier whose threshold ``prompt_tokens`` exceeds, among tiers of the wanted kind."""
    exceeded = [
        tier
        for tier in tiers
        if prompt_tokens > tier.above_tokens and (tier.has_batch_rates if batch else tier.has_standard_rates)
    ]
    return max(exceeded, key=lambda tier: tier.above_tokens, default=None)


def _first(*rates: Decimal | None) -> Decimal:
    return next(rate for rate in rates if rate is not None)


def _check(usage: Usage) -> None:
    counts = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "cache_creation_tokens": usage.cache_creation_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if usage.cached_tokens + usage.cache_creation_tokens > usage.prompt_tokens:
        raise ValueError("cached_tokens + cache_creation_tokens must not exceed prompt_tokens")
    if usage.reasoning_tokens > usage.completion_tokens:
        raise ValueError("reasoning_tokens must not exceed completion_tokens")


def cost_of(rates: Rates, usage: Usage, *, tier_prompt_tokens: int | None = None) -> CostBreakdown:
    """Price ``usage`` with ``rates`` (rules in the module docstring), exactly, in USD.

    ``tier_prompt_tokens`` is the prompt size that picks the long-context tier (default: the usage's
    own ``prompt_tokens``). Pricing is linear within a tier, so a caller can price the token sums of
    many requests that reach the same tier in one call by passing the size of one of them.

    Raises ValueError when a token count is negative or not an int, or a part exceeds its total.
    """
    _check(usage)
    tier_size = usage.prompt_tokens if tier_prompt_tokens is None else tier_prompt_tokens
    if usage.batch and rates.has_batch_rates:
        tier = _select_tier(rates.tiers, tier_size, batch=True)
        input_rate = _first(tier and tier.batch_input, rates.batch_input)
        output_rate = _first(tier and tier.batch_output, rates.batch_output)
        # No published batch cache-read rate: cached tokens keep the standard cache-read rate (of the
        # standard long-context tier the prompt reaches), as litellm >= 1.110 bills them.
        standard_tier = _select_tier(rates.tiers, tier_size, batch=False)
        cache_read = _first(
            tier and tier.batch_cache_read,
            rates.batch_cache_read,
            standard_tier and standard_tier.cache_read,
            rates.cache_read,
            input_rate,
        )
        cache_write = _first(tier and tier.batch_cache_write, rates.batch_cache_write, input_rate)
        reasoning = output_rate
    else:
        tier = _select_tier(rates.tiers, tier_size, batch=False)
        input_rate = _first(tier and tier.input, rates.input)
        output_rate = _first(tier and tier.output, rates.output)
        cache_read = _first(tier and tier.cache_read, rates.cache_read, input_rate)
        cache_write = _first(tier and tier.cache_write, rates.cache_write, input_rate)
        reasoning = _first(tier and tier.reasoning, rates.reasoning, output_rate)

    uncached = usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens
    text_output = usage.completion_tokens - usage.reasoning_tokens
    # Rates carry up to 24 digits and token counts up to 19: keep every product exact.
    with localcontext() as ctx:
        ctx.prec = 80
        return CostBreakdown(
            input_usd=uncached * input_rate / PER_TOKENS,
            cached_input_usd=usage.cached_tokens * cache_read / PER_TOKENS,
            cache_creation_usd=usage.cache_creation_tokens * cache_write / PER_TOKENS,
            output_usd=(text_output * output_rate + usage.reasoning_tokens * reasoning) / PER_TOKENS,
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


def usd_text(amount: Decimal | None) -> str:
    """Money for people: "$1,234.56"; amounts under a cent keep their significant digits
    ("$0.0045"); None is "—"."""
    if amount is None:
        return "—"
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount == 0 or amount >= Decimal("0.01"):
        return f"{sign}${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"
    # Two significant digits below a cent.
    exponent = amount.adjusted() - 1
    return f"{sign}${amount.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_HALF_UP).normalize():f}"
