"""The worst case of a request in nano-dollars, and the per-process price cache behind it."""

import time
from datetime import datetime
from decimal import ROUND_CEILING

from django.conf import settings

from budgets.models import NANOS_PER_USD
from budgets.services import check_context
from pricing.calculator import Rates, Usage, cost_of
from pricing.models import ModelPrice
from pricing.selectors import PriceBook


def worst_case_nanos(price: ModelPrice, prompt_tokens: int, max_output_tokens: int) -> int:
    """The most a request of ``prompt_tokens`` in and up to ``max_output_tokens`` out can cost with
    ``price``, in nano-dollars rounded up: every input token at the dearer of the input and
    cache-write rates, every output token at the dearer of the output and reasoning rates (tiers
    applied by ``cost_of``)."""
    rates, dearer_writes, dearer_reasoning = _rates(price)
    worst = max(
        cost_of(
            rates,
            Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=max_output_tokens,
                cache_creation_tokens=cache_writes,
                reasoning_tokens=reasoning,
            ),
        ).total_usd
        for cache_writes in ({0, prompt_tokens} if dearer_writes else (0,))
        for reasoning in ({0, max_output_tokens} if dearer_reasoning else (0,))
    )
    return int((worst * NANOS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


# price id -> (rates, may a cache write cost more than input?, may reasoning cost more than output?)
_rates_cache: dict[int, tuple[Rates, bool, bool]] = {}
# model name -> (monotonic expiry, PriceBook holding every version of its price)
_price_cache: dict[str, tuple[float, PriceBook]] = {}
_PRICE_CACHE_MAX = 2048


def _rates(price: ModelPrice) -> tuple[Rates, bool, bool]:
    cached = _rates_cache.get(price.pk)
    if cached is None:
        if len(_rates_cache) >= _PRICE_CACHE_MAX:
            _rates_cache.clear()
        rates = Rates.from_price(price)
        # Conservative: any published cache-write / reasoning rate (base or tier) may be the dearer one.
        levels = [rates, *rates.tiers]
        writes = any(r.cache_write is not None for r in levels)
        reasoning = any(r.reasoning is not None for r in levels)
        cached = _rates_cache[price.pk] = (rates, writes, reasoning)
    return cached


def _price_for(model: str, at: datetime) -> ModelPrice | None:
    """The catalog price in effect at ``at`` (cached per process, see the package docstring)."""
    ttl = settings.SPENDGUARD_CHECK_PRICE_CACHE_SECONDS
    clock = time.monotonic()
    cached = _price_cache.get(model)
    if cached is None or cached[0] < clock:
        book = PriceBook([(model, "")])
        if ttl > 0:
            if len(_price_cache) >= _PRICE_CACHE_MAX:
                _price_cache.clear()
            _price_cache[model] = (clock + ttl, book)
    else:
        book = cached[1]
    return book.resolve(model, "", at)


def check_caches_clear() -> None:
    """Forget cached prices and check contexts (tests; an operator shell after editing prices)."""
    _price_cache.clear()
    _rates_cache.clear()
    check_context.check_context_clear()
