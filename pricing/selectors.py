"""Reads of the price catalog: which price applies to a model name at a moment."""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from django.db import connection

from config.db import in_list, row_shape
from pricing.calculator import CostBreakdown, Rates, Usage, cost_of
from pricing.models import ModelAlias, ModelPrice, PriceSource


def model_name_candidates(model: str, provider: str = "") -> list[str]:
    """Catalog names to try for ``model``, in order: the exact name, ``provider/model`` when a
    provider is given, then the name without its provider prefix (``openai/gpt-4o`` -> ``gpt-4o``)."""
    candidates = [model]
    if provider and not model.startswith(f"{provider}/"):
        candidates.append(f"{provider}/{model}")
    if "/" in model:
        candidates.append(model.split("/", 1)[1])
    return list(dict.fromkeys(candidates))


class PriceBook:
    """Prices for a set of model names, loaded with one query, answered per (model, provider, at).

    Built once per ingest batch so that pricing 1,000 records costs one query, not 1,000.
    """

    def __init__(self, names: Iterable[tuple[str, str]]) -> None:
        pairs = list(dict.fromkeys(names))
        direct = sorted({c for model, provider in pairs for c in model_name_candidates(model, provider)})
        self._aliases: dict[str, str] = {}
        self._versions: dict[str, list[ModelPrice]] = defaultdict(list)
        if not direct:
            return
        shape = row_shape(ModelPrice)
        with connection.cursor() as cursor:
            cursor.execute(_price_book_sql(len(direct)), [*direct, *direct])
            rows = cursor.fetchall()
        seen: set[int] = set()
        for row in rows:
            price = shape.instance(row[1:])
            if row[0] is not None:
                self._aliases[row[0]] = price.model
            if price.pk not in seen:  # a model can be reached both directly and through an alias
                seen.add(price.pk)
                self._versions[price.model].append(price)

    def resolve(self, model: str, provider: str, at: datetime) -> ModelPrice | None:
        """The price in effect at ``at`` for ``model``: exact name, provider-qualified, provider
        stripped, then an operator alias. Manual prices win over synced ones; among several rows
        for one name, the one whose provider matches the caller's wins."""
        names = model_name_candidates(model, provider)
        names += [self._aliases[n] for n in names if n in self._aliases]
        for name in names:
            price = _pick(self._versions.get(name, ()), provider, at)
            if price is not None:
                return price
        return None


@lru_cache(maxsize=128)
def _price_book_sql(names: int) -> str:
    """The versions of ``names`` catalog names plus those of the models their operator aliases point
    at (tagged with the alias) — one round trip on the ingest hot path."""
    shape = row_shape(ModelPrice)
    alias_table = connection.ops.quote_name(ModelAlias._meta.db_table)
    placeholders = in_list([None] * names)
    return (
        f"SELECT NULL, {shape.select('p')} FROM {shape.table} p WHERE p.model IN {placeholders} "
        f"UNION ALL SELECT a.alias, {shape.select('p')} FROM {alias_table} a "
        f"JOIN {shape.table} p ON p.model = a.model WHERE a.alias IN {placeholders}"
    )


def _pick(versions: Iterable[ModelPrice], provider: str, at: datetime) -> ModelPrice | None:
    in_effect = [p for p in versions if p.effective_from <= at and (p.effective_to is None or at < p.effective_to)]
    if not in_effect:
        return None
    return min(
        in_effect,
        key=lambda p: (
            p.source != PriceSource.MANUAL,
            bool(provider) and p.provider != provider,
            -p.effective_from.timestamp(),
        ),
    )


def price_resolve(*, model: str, provider: str = "", at: datetime) -> ModelPrice | None:
    """The price in effect for one model name at ``at`` (see :meth:`PriceBook.resolve`)."""
    return PriceBook([(model, provider)]).resolve(model, provider, at)


def price_history(*, model: str) -> list[ModelPrice]:
    """Every version of a model's price (all providers and sources), newest first."""
    return list(ModelPrice.objects.filter(model=model).order_by("-effective_from", "-pk"))


@dataclass(frozen=True, slots=True)
class Quote:
    """The price a usage breakdown would be charged; ``price`` and ``cost`` are None when unpriced."""

    model: str
    price: ModelPrice | None
    cost: CostBreakdown | None


def price_quote(*, model: str, provider: str = "", usage: Usage, at: datetime) -> Quote:
    """Price ``usage`` of ``model`` with the catalog price in effect at ``at`` (nothing is written).

    Raises ValueError when the usage parts exceed their totals (see :func:`pricing.calculator.cost_of`)."""
    price = price_resolve(model=model, provider=provider, at=at)
    if price is None:
        return Quote(model=model, price=None, cost=None)
    return Quote(model=model, price=price, cost=cost_of(Rates.from_price(price), usage))
