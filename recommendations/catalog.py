"""Catalog reads and rules for the generators that price the same traffic somewhere else (a cheaper
model, a cheaper provider): which prices are current, which catalog names are the same model, whether
a price can take an agent's traffic, and what a slice of the token mix costs at a price.

Kept apart from :mod:`pricing.selectors` because these rules are about *substitution* (what an
operator could switch to), not about which price a ledger row is charged.
"""

import re
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Q

from pricing.calculator import Rates, format_usd
from pricing.models import ModelPrice, PriceSource
from recommendations.models import ModelTier

# Bedrock's cross-region inference names: "<region>.<vendor>.<model>" (eu.anthropic.claude-…).
_BEDROCK_REGION = re.compile(r"^([a-z-]+)\.[a-z0-9]+\.")
TOKEN_FIELDS = ("prompt_tokens", "cached_tokens", "cache_creation_tokens", "completion_tokens", "reasoning_tokens")


def current_prices(
    *, at: datetime, mode: str | None = None, provider: str | None = None, models: Iterable[str] | None = None
) -> list[ModelPrice]:
    """The price of each catalog model name in effect at ``at`` (``effective_from <= at <
    effective_to``), optionally of one ``mode`` / ``provider`` / set of exact names. One price per
    name: a manual row beats a litellm one (as in PriceBook), then the newest version. Sorted by name.
    """
    rows = ModelPrice.objects.filter(effective_from__lte=at).filter(
        Q(effective_to__isnull=True) | Q(effective_to__gt=at)
    )
    if mode is not None:
        rows = rows.filter(mode=mode)
    if provider is not None:
        rows = rows.filter(provider=provider)
    if models is not None:
        rows = rows.filter(model__in=list(models))
    best: dict[str, ModelPrice] = {}
    for price in rows:
        known = best.get(price.model)
        if known is None or _preference(price) < _preference(known):
            best[price.model] = price
    return [best[name] for name in sorted(best)]


def _preference(price: ModelPrice) -> tuple:
    return (price.source != PriceSource.MANUAL, -price.effective_from.timestamp(), -price.pk)


def tier_families() -> dict[str, str]:
    """Catalog model name -> the operator's quality-tier family (``ModelTier``; a small table)."""
    return dict(ModelTier.objects.values_list("model", "family"))


def same_model_key(name: str) -> str | None:
    """What makes two catalog names the same model from different providers — conservative and exact:
    the name without its first ``provider/`` segment, with Vertex's ``@date`` written ``-date``
    (``azure/gpt-4o`` and ``gpt-4o`` -> ``gpt-4o``; ``vertex_ai/claude-sonnet-4-5@20250929`` and
    ``claude-sonnet-4-5-20250929`` -> ``claude-sonnet-4-5-20250929``). Case matters.

    Deliberately not matched: regional deployments (``azure/eu/gpt-4o`` keys ``eu/gpt-4o``) and
    Bedrock's ``[region.]vendor.model-vN:M`` names, because a region is usually a data-residency choice
    (and Bedrock lists Anthropic's own prices); and moving aliases (names ending in ``latest``, None),
    which point at different snapshots at different providers (``azure/mistral-large-latest`` is an
    older Mistral Large than ``mistral/mistral-large-latest``).
    """
    key = name.split("/", 1)[1] if "/" in name else name
    if key.lower().endswith("latest"):
        return None
    return key.replace("@", "-")


def deployment_route(name: str) -> str:
    """Where a catalog name is served, apart from the model: the path before its last segment plus a
    Bedrock region prefix (``azure/eu/gpt-4o`` -> ``azure/eu/``, ``eu.anthropic.claude-…`` -> ``eu.``,
    ``gpt-4o`` -> ``""``). An unvetted substitute must keep the route, so a suggestion never moves
    traffic to another region or reseller."""
    route, _, last = name.rpartition("/")
    region = _BEDROCK_REGION.match(last)
    return (f"{route}/" if route else "") + (f"{region.group(1)}." if region else "")


def charges_something(price: ModelPrice) -> bool:
    """False for a price with zero input and output rates: in the model map that means experimental or
    self-hosted (ollama, gemini-exp-…), not a model that would save 100%."""
    return bool(price.input_usd_per_mtok or price.output_usd_per_mtok)


def missing_capabilities(current: ModelPrice, candidate: ModelPrice) -> list[str]:
    """The ``supports_*`` flags true on ``current`` that are not true on ``candidate`` (a flag the
    candidate does not list counts as unsupported, so a manual price without capabilities can only
    replace models that claim none)."""
    have = {flag for flag, value in (candidate.capabilities or {}).items() if value is True}
    return sorted(
        flag
        for flag, value in (current.capabilities or {}).items()
        if flag.startswith("supports_") and value is True and flag not in have
    )


@dataclass(frozen=True, slots=True)
class Traffic:
    """Token sums of some :class:`recommendations.selectors.MixRow` s (one agent's requests of one
    model, all batch flags and long-context bands), priced exactly band by band."""

    rows: tuple  # of MixRow

    @property
    def requests(self) -> int:
        return sum(row.requests for row in self.rows)

    @property
    def max_prompt_tokens(self) -> int:
        return max(row.max_prompt_tokens for row in self.rows)

    @property
    def max_completion_tokens(self) -> int:
        return max(row.max_completion_tokens for row in self.rows)

    def total(self, field: str) -> int:
        return sum(getattr(row, field) for row in self.rows)

    def cost_at(self, price: ModelPrice) -> Decimal:
        """Exact USD these requests cost at ``price`` (each row's batch flag and band kept, cached and
        cache-write tokens at the price's cache rates)."""
        rates = Rates.from_price(price)
        return sum((row.priced(rates).total_usd for row in self.rows), Decimal(0))

    def fits(self, price: ModelPrice) -> bool:
        """Whether the largest prompt and completion seen fit the price's limits (unknown = fits)."""
        return (price.max_input_tokens is None or price.max_input_tokens >= self.max_prompt_tokens) and (
            price.max_output_tokens is None or price.max_output_tokens >= self.max_completion_tokens
        )

    def token_evidence(self) -> dict:
        return {
            "requests": self.requests,
            "batch_requests": sum(row.requests for row in self.rows if row.is_batch),
            **{field: self.total(field) for field in TOKEN_FIELDS},
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_completion_tokens": self.max_completion_tokens,
        }

    def tokens_text(self) -> str:
        """For explanations: "1,000,000 prompt tokens (200,000 cached), 50,000 completion tokens"."""
        prompt, cached, written = (self.total(f) for f in ("prompt_tokens", "cached_tokens", "cache_creation_tokens"))
        parts = [f"{cached:,} cached"] if cached else []
        parts += [f"{written:,} written to the cache"] if written else []
        detail = f" ({', '.join(parts)})" if parts else ""
        return f"{prompt:,} prompt tokens{detail}, {self.total('completion_tokens'):,} completion tokens"


def traffic_groups(rows: Sequence, key: Callable[[object], Hashable]) -> dict[Hashable, Traffic]:
    """The mix rows grouped by ``key(row)``, in first-seen order (token_mix is sorted, so stable)."""
    grouped: dict[Hashable, list] = defaultdict(list)
    for row in rows:
        grouped[key(row)].append(row)
    return {k: Traffic(rows=tuple(v)) for k, v in grouped.items()}


def price_evidence(price: ModelPrice) -> dict:
    """A price's identity and base rates (USD / 1M tokens, decimal strings) for a finding's evidence."""
    return {
        "price_id": price.pk,
        "model": price.model,
        "provider": price.provider,
        "input_usd_per_mtok": format_usd(price.input_usd_per_mtok),
        "output_usd_per_mtok": format_usd(price.output_usd_per_mtok),
        "cache_read_usd_per_mtok": format_usd(price.cache_read_usd_per_mtok),
    }
