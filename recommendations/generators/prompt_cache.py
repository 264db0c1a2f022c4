"""Provider prompt caching: an agent that sends large prompts to a model with a cheap cache-read
price, yet has almost none of them served from the provider's cache, is likely resending the same
long prefix (system prompt, tool definitions, documents) at the full input rate.

Rules:

- Traffic: an agent's non-batch requests of one model and provider (its token mix, every operation).
  Batch requests are left out: batch APIs serve cache hits on a best-effort basis, so a saving there
  cannot be promised.
- Eligible when the model's current price has a cache-read rate below its input rate, the average
  prompt is at least ``MIN_AVERAGE_PROMPT_TOKENS`` (1,024: the smallest prefix OpenAI and Anthropic
  cache) and under ``MAX_CACHED_SHARE`` (10 %) of the prompt tokens were cache reads.
- Estimate: ``REUSABLE_PREFIX_SHARE`` (50 %) of the uncached prompt tokens become cacheable. Of
  those, ``CACHE_WRITE_SHARE`` (10 %, rounded up: one write for every nine reads) are cache writes
  at the cache-write rate (the input rate when none is published, so a write costs nothing extra on
  OpenAI and the 1.25x premium on Anthropic) and the rest cache reads. Token counts stay integers, so
  ``saving = price(actual tokens) - price(shifted tokens)``, both at today's catalog, is exact.

Confidence is medium (the reusable share is an assumption, not a measurement); effort is low
(reorder the prompt so the fixed part comes first; mark it with ``cache_control`` on Anthropic).
"""

from collections import defaultdict
from decimal import Decimal

from costs.models import Agent
from pricing.calculator import Rates, Usage, format_usd, usd_text
from pricing.selectors import PriceBook
from recommendations.generators.base import Finding, GenerationContext
from recommendations.models import Confidence, Effort, RecommendationKind
from recommendations.selectors import MixRow, token_mix

MIN_AVERAGE_PROMPT_TOKENS = 1024
MAX_CACHED_SHARE = Decimal("0.10")  # of prompt tokens served as cache reads
REUSABLE_PREFIX_SHARE_PERCENT = 50  # of the uncached prompt tokens
CACHE_WRITE_SHARE_PERCENT = 10  # of the cacheable tokens, rounded up
TARGET = "prompt caching"


def shifted_usage(row: MixRow) -> Usage:
    """The row's tokens with the assumed reusable prefix served from the provider's cache."""
    uncached = row.prompt_tokens - row.cached_tokens - row.cache_creation_tokens
    cacheable = uncached * REUSABLE_PREFIX_SHARE_PERCENT // 100
    writes = -(-cacheable * CACHE_WRITE_SHARE_PERCENT // 100)
    usage = row.usage
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens + cacheable - writes,
        cache_creation_tokens=usage.cache_creation_tokens + writes,
        reasoning_tokens=usage.reasoning_tokens,
        batch=usage.batch,
    )


def generate(context: GenerationContext) -> list[Finding]:
    groups: dict[tuple, list[MixRow]] = defaultdict(list)
    for row in token_mix(context):
        if not row.is_batch:
            groups[(row.project_id, row.agent_id, row.model, row.provider)].append(row)
    book = PriceBook((model, provider) for _, _, model, provider in groups)
    agents = Agent.objects.in_bulk({agent_id for _, agent_id, _, _ in groups})
    findings = []
    for (project_id, agent_id, model, provider), rows in sorted(groups.items()):
        price = book.resolve(model, provider, context.end)
        if price is None or price.cache_read_usd_per_mtok is None:
            continue
        if price.cache_read_usd_per_mtok >= price.input_usd_per_mtok:
            continue
        requests = sum(row.requests for row in rows)
        prompt = sum(row.prompt_tokens for row in rows)
        cached = sum(row.cached_tokens for row in rows)
        if prompt < MIN_AVERAGE_PROMPT_TOKENS * requests or cached >= MAX_CACHED_SHARE * prompt:
            continue
        rates = Rates.from_price(price)
        current = sum((row.priced(rates).total_usd for row in rows), Decimal(0))
        shifted = [shifted_usage(row) for row in rows]
        with_cache = sum(
            (row.priced(rates, usage=usage).total_usd for row, usage in zip(rows, shifted, strict=True)), Decimal(0)
        )
        saving = current - with_cache
        monthly = context.monthly(saving)
        if not context.clears_minimum(monthly):
            continue
        baseline_cost = sum((row.cost_usd for row in rows), Decimal(0))
        new_reads = sum(u.cached_tokens for u in shifted) - cached
        new_writes = sum(u.cache_creation_tokens for u in shifted) - sum(row.cache_creation_tokens for row in rows)
        name = agents[agent_id].name
        findings.append(
            Finding(
                kind=RecommendationKind.PROMPT_CACHE,
                title=f"Use prompt caching for {name} on {model}",
                explanation=(
                    f"{name} sent {requests} requests to {model} averaging {prompt // requests:,} prompt tokens, "
                    f"and only {cached:,} of its {prompt:,} prompt tokens were read from the provider's cache. "
                    f"{model} bills cache reads at ${price.cache_read_usd_per_mtok.normalize():f} instead of "
                    f"${price.input_usd_per_mtok.normalize():f} per 1M tokens. If {REUSABLE_PREFIX_SHARE_PERCENT}% "
                    f"of the uncached prompt were a fixed prefix (system prompt, tools, documents) placed first, "
                    f"and {CACHE_WRITE_SHARE_PERCENT}% of those tokens were cache writes, the same traffic would cost "
                    f"{usd_text(with_cache)} instead of {usd_text(current)} at today's prices: "
                    f"{usd_text(saving)} saved in {context.days.normalize():f} days, about {usd_text(monthly)} a month."
                ),
                monthly_saving_usd=monthly,
                baseline_cost_usd=baseline_cost,
                baseline_requests=requests,
                confidence=Confidence.MEDIUM,
                effort=Effort.LOW,
                project_id=project_id,
                agent_id=agent_id,
                model=model,
                provider=provider,
                target=TARGET,
                evidence={
                    "requests": requests,
                    "prompt_tokens": prompt,
                    "cached_tokens": cached,
                    "average_prompt_tokens": prompt // requests,
                    "reusable_prefix_share_percent": REUSABLE_PREFIX_SHARE_PERCENT,
                    "cache_write_share_percent": CACHE_WRITE_SHARE_PERCENT,
                    "assumed_cache_read_tokens": new_reads,
                    "assumed_cache_write_tokens": new_writes,
                    "input_usd_per_mtok": format_usd(price.input_usd_per_mtok),
                    "cache_read_usd_per_mtok": format_usd(price.cache_read_usd_per_mtok),
                    "cache_write_usd_per_mtok": format_usd(price.cache_write_usd_per_mtok),
                    "baseline_cost_usd": format_usd(baseline_cost),
                    "current_cost_usd": format_usd(current),
                    "with_cache_cost_usd": format_usd(with_cache),
                    "window_saving_usd": format_usd(saving),
                    "monthly_saving_usd": format_usd(monthly),
                },
            )
        )
    return findings
