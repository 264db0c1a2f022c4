"""Reads for the recommendation generators, the API and the report page."""

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Case, Count, IntegerField, Max, QuerySet, Sum, Value, When

from pricing.calculator import CostBreakdown, Rates, Usage, cost_of
from pricing.models import ModelPrice
from recommendations.generators.base import GenerationContext
from recommendations.models import Recommendation, RecommendationStatus


@dataclass(frozen=True, slots=True)
class MixRow:
    """The token sums of one agent's requests of one model, operation and batch flag whose prompts
    reach the same long-context band (``tier_prompt_tokens`` picks any price's tier for all of them)."""

    project_id: int
    agent_id: int
    operation: str
    model: str
    provider: str
    is_batch: bool
    tier_prompt_tokens: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_creation_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal  # what the ledger charged
    max_prompt_tokens: int
    max_completion_tokens: int

    @property
    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_tokens=self.cached_tokens,
            cache_creation_tokens=self.cache_creation_tokens,
            reasoning_tokens=self.reasoning_tokens,
            batch=self.is_batch,
        )

    def priced(self, rates: Rates, *, batch: bool | None = None, usage: Usage | None = None) -> CostBreakdown:
        """This row's tokens (or ``usage``, e.g. with a different cached share) at ``rates``, exactly;
        ``batch`` overrides the row's batch flag (what batch would have cost)."""
        usage = usage or self.usage
        if batch is not None:
            usage = Usage(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                cache_creation_tokens=usage.cache_creation_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                batch=batch,
            )
        return cost_of(rates, usage, tier_prompt_tokens=self.tier_prompt_tokens)


def tier_thresholds() -> list[int]:
    """Every long-context threshold (``above_tokens``) of a current catalog price, ascending."""
    thresholds: set[int] = set()
    for tiers in ModelPrice.objects.filter(effective_to__isnull=True).exclude(tiers=[]).values_list("tiers", flat=True):
        thresholds.update(int(tier["above_tokens"]) for tier in tiers)
    return sorted(thresholds)


def token_mix(context: GenerationContext) -> list[MixRow]:
    """The window's priced traffic as :class:`MixRow` s, one query. Requests are banded by every
    catalog tier threshold, so each band prices exactly at any model's rates (a band lies within one
    tier of every price)."""
    thresholds = tier_thresholds()
    # Band = the highest threshold the prompt exceeds (-1: none); its representative size is band + 1.
    band = Case(
        *(When(prompt_tokens__gt=t, then=Value(t)) for t in reversed(thresholds)),
        default=Value(-1),
        output_field=IntegerField(),
    )
    rows = (
        context.ledger()
        .annotate(band=band)
        .values("project_id", "agent_id", "operation", "model", "provider", "is_batch", "band")
        .annotate(
            requests=Count("id"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            cached=Sum("cached_tokens"),
            cache_creation=Sum("cache_creation_tokens"),
            reasoning=Sum("reasoning_tokens"),
            cost=Sum("cost_usd"),
            max_prompt=Max("prompt_tokens"),
            max_completion=Max("completion_tokens"),
        )
        .order_by("project_id", "agent_id", "operation", "model", "provider", "is_batch", "band")
    )
    return [
        MixRow(
            project_id=row["project_id"],
            agent_id=row["agent_id"],
            operation=row["operation"],
            model=row["model"],
            provider=row["provider"],
            is_batch=row["is_batch"],
            tier_prompt_tokens=row["band"] + 1,
            requests=row["requests"],
            prompt_tokens=row["prompt"],
            completion_tokens=row["completion"],
            cached_tokens=row["cached"],
            cache_creation_tokens=row["cache_creation"],
            reasoning_tokens=row["reasoning"],
            cost_usd=row["cost"],
            max_prompt_tokens=row["max_prompt"],
            max_completion_tokens=row["max_completion"],
        )
        for row in rows
    ]


def recommendation_list(*, organization, filters: dict | None = None) -> QuerySet[Recommendation]:
    """An organization's recommendations, best first, with their scope loaded."""
    queryset = Recommendation.objects.filter(organization=organization).select_related("project", "agent")
    return queryset.filter(**(filters or {}))


def top_opportunities(*, organization, limit: int = 50) -> list[Recommendation]:
    """Open and accepted recommendations, highest priority first (the report page)."""
    statuses = [RecommendationStatus.OPEN, RecommendationStatus.ACCEPTED]
    return list(recommendation_list(organization=organization).filter(status__in=statuses)[:limit])
