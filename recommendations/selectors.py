"""Reads for the recommendation generators, the API and the report page."""

from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlencode

from django.db.models import Case, Count, IntegerField, Max, Q, QuerySet, Sum, Value, When
from django.urls import reverse

from pricing.calculator import CostBreakdown, Rates, Usage, cost_of
from pricing.models import ModelPrice
from recommendations.generators.base import GenerationContext
from recommendations.models import Recommendation, RecommendationKind, RecommendationStatus


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


def token_mix(context: GenerationContext, *, where: Q | None = None) -> list[MixRow]:
    """The window's priced traffic (narrowed by ``where``, e.g. to tagged rows) as :class:`MixRow` s,
    one query. Requests are banded by every catalog tier threshold, so each band prices exactly at
    any model's rates (a band lies within one tier of every price)."""
    thresholds = tier_thresholds()
    # Band = the highest threshold the prompt exceeds (-1: none); its representative size is band + 1.
    band = Case(
        *(When(prompt_tokens__gt=t, then=Value(t)) for t in reversed(thresholds)),
        default=Value(-1),
        output_field=IntegerField(),
    )
    ledger = context.ledger() if where is None else context.ledger().filter(where)
    rows = (
        ledger.annotate(band=band)
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


def recommendation_queryset() -> QuerySet[Recommendation]:
    """Recommendations best first (priority, then saving), with what their payload shows loaded."""
    return Recommendation.objects.select_related("organization", "project", "agent").order_by(
        "-priority_score", "-estimated_monthly_saving_usd", "id"
    )


def top_opportunities(*, organization, statuses=None, limit: int = 100) -> list[Recommendation]:
    """Open and accepted recommendations (or ``statuses``), highest priority first (the report page)."""
    statuses = statuses or [RecommendationStatus.OPEN, RecommendationStatus.ACCEPTED]
    return list(recommendation_queryset().filter(organization=organization, status__in=statuses)[:limit])


def ledger_rows_url(rec: Recommendation) -> str:
    """The admin's ledger list filtered to the rows a recommendation was computed from (its scope,
    model, provider and operation over its window), so its figures can be checked by hand."""
    query = {
        "organization__id__exact": rec.organization_id,
        "occurred_at__gte": rec.window_start.isoformat(),
        "occurred_at__lt": rec.window_end.isoformat(),
    }
    if rec.agent_id:
        query["agent__id__exact"] = rec.agent_id
    elif rec.project_id:
        query["project__id__exact"] = rec.project_id
    if rec.model:
        query["model__exact"] = rec.model
    if rec.provider:
        query["provider__exact"] = rec.provider
    if rec.operation:
        query["operation__exact"] = rec.operation
    # Narrowed further to the rows the kind's generator counted (see its module).
    query.update(_KIND_ROWS.get(rec.kind, {}))
    return f"{reverse('admin:costs_usagerecord_changelist')}?{urlencode(query)}"


_KIND_ROWS = {
    # Successful requests with a prompt hash; the list's "prompt hash" column shows the repeats.
    RecommendationKind.RESPONSE_CACHE: {"status__exact": "success", "prompt_hash__gt": ""},
    RecommendationKind.PROMPT_CACHE: {"is_batch__exact": "0"},
    RecommendationKind.BATCH_API: {"is_batch__exact": "0"},
    RecommendationKind.OUTPUT_CAP: {"status__exact": "success"},
}
