"""Output caps: an agent whose answers are usually short but now and then run very long pays for that
tail; a ``max_tokens`` cap at a high percentile of its own answers cuts it.

Rules:

- Traffic: an agent's successful text-generating requests (chat, completion, responses) of one model
  and provider; at least ``MIN_REQUESTS`` (20) of them, or a percentile means little.
- Percentiles of ``completion_tokens`` by the nearest-rank method (the smallest value with at least
  p % of the requests at or below it), computed here over the values so every database agrees.
- Long tail: ``max > 4 x p50`` or ``p99 > 2 x p95``. A tight distribution has neither, and a cap
  would only truncate answers for nothing.
- The cap is the p95 (``CAP_PERCENTILE``): about one answer in twenty would stop at it.
- Saving: each request above the cap re-priced at today's catalog with ``completion = cap``. A cap
  limits all output, reasoning included, and models reason before they answer, so the cap keeps the
  reasoning (up to the cap) and cuts the answer text: ``reasoning = min(reasoning, cap)``. The prompt is
  unchanged, so the difference is the output that would not have been generated, at its own rates
  (reasoning, batch, long-context tier as the calculator bills them).

Confidence is low: a truncated answer may be useless (and retried), which the estimate ignores.
Effort is low: one request parameter.
"""

from collections import defaultdict
from decimal import Decimal

from costs.models import Agent, Operation, UsageStatus
from pricing.calculator import Rates, Usage, cost_of, format_usd, usd_text
from pricing.selectors import PriceBook
from recommendations.generators.base import Finding, GenerationContext
from recommendations.models import Confidence, Effort, RecommendationKind

MIN_REQUESTS = 20
CAP_PERCENTILE = 95
TAIL_MAX_OVER_P50 = 4  # long tail when max > 4 x p50 ...
TAIL_P99_OVER_P95 = 2  # ... or p99 > 2 x p95
TEXT_OPERATIONS = (Operation.CHAT, Operation.COMPLETION, Operation.RESPONSES)

COLUMNS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "is_batch",
    "cost_usd",
)


def percentile(ordered: list[int], p: int) -> int:
    """Nearest-rank percentile of ascending, non-empty ``ordered``: the value at rank ceil(p/100 x n)."""
    rank = -(-p * len(ordered) // 100)
    return ordered[max(rank, 1) - 1]


def has_long_tail(ordered: list[int]) -> bool:
    p50, p95, p99 = (percentile(ordered, p) for p in (50, 95, 99))
    return ordered[-1] > TAIL_MAX_OVER_P50 * p50 or p99 > TAIL_P99_OVER_P95 * p95


def _usage(prompt, completion, cached, creation, reasoning, is_batch) -> Usage:
    return Usage(prompt, completion, cached, creation, reasoning, batch=is_batch)


def capped_saving(rates: Rates, requests: list[tuple], cap: int) -> tuple[Decimal, int, int]:
    """(USD saved, requests above ``cap``, output tokens not generated) for ``requests`` (COLUMNS rows)."""
    saving, over, removed = Decimal(0), 0, 0
    for prompt, completion, cached, creation, reasoning, is_batch, _cost in requests:
        if completion <= cap:
            continue
        actual = cost_of(rates, _usage(prompt, completion, cached, creation, reasoning, is_batch))
        capped = cost_of(rates, _usage(prompt, cap, cached, creation, min(reasoning, cap), is_batch))
        saving += actual.total_usd - capped.total_usd
        over += 1
        removed += completion - cap
    return saving, over, removed


def generate(context: GenerationContext) -> list[Finding]:
    rows = context.ledger().filter(status=UsageStatus.SUCCESS, operation__in=TEXT_OPERATIONS)
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for project_id, agent_id, model, provider, *values in rows.values_list(
        "project_id", "agent_id", "model", "provider", *COLUMNS
    ).order_by():
        groups[(project_id, agent_id, model, provider)].append(tuple(values))
    groups = {key: requests for key, requests in groups.items() if len(requests) >= MIN_REQUESTS}
    book = PriceBook((model, provider) for _, _, model, provider in groups)
    agents = Agent.objects.in_bulk({agent_id for _, agent_id, _, _ in groups})
    findings = []
    for (project_id, agent_id, model, provider), requests in sorted(groups.items()):
        ordered = sorted(request[1] for request in requests)
        cap = percentile(ordered, CAP_PERCENTILE)
        if cap == 0 or not has_long_tail(ordered):
            continue
        price = book.resolve(model, provider, context.end)
        if price is None:
            continue
        saving, over, removed = capped_saving(Rates.from_price(price), requests, cap)
        monthly = context.monthly(saving)
        if not context.clears_minimum(monthly):
            continue
        baseline_cost = sum((request[-1] for request in requests), Decimal(0))
        p50, p99 = percentile(ordered, 50), percentile(ordered, 99)
        name = agents[agent_id].name
        findings.append(
            Finding(
                kind=RecommendationKind.OUTPUT_CAP,
                title=f"Cap the output of {name} on {model} at {cap:,} tokens",
                explanation=(
                    f"{name}'s {len(requests)} answers from {model} are usually short (median {p50:,} output "
                    f"tokens, p95 {cap:,}) but run long at the tail (p99 {p99:,}, longest {ordered[-1]:,}). "
                    f"With max_tokens={cap} the {over} longest answers would have stopped at {cap:,} tokens, "
                    f"{removed:,} output tokens fewer: {usd_text(saving)} saved in {context.days.normalize():f} "
                    f"days at today's prices, about {usd_text(monthly)} a month. Those answers would be cut "
                    "short: check that the agent copes with a truncated answer before relying on the saving."
                ),
                monthly_saving_usd=monthly,
                baseline_cost_usd=baseline_cost,
                baseline_requests=len(requests),
                confidence=Confidence.LOW,
                effort=Effort.LOW,
                project_id=project_id,
                agent_id=agent_id,
                model=model,
                provider=provider,
                target=f"max_tokens={cap}",
                evidence={
                    "requests": len(requests),
                    "cap_percentile": CAP_PERCENTILE,
                    "completion_tokens_p50": p50,
                    "completion_tokens_p95": cap,
                    "completion_tokens_p99": p99,
                    "completion_tokens_max": ordered[-1],
                    "max_tokens": cap,
                    "requests_over_cap": over,
                    "output_tokens_removed": removed,
                    "output_usd_per_mtok": format_usd(price.output_usd_per_mtok),
                    "baseline_cost_usd": format_usd(baseline_cost),
                    "window_saving_usd": format_usd(saving),
                    "monthly_saving_usd": format_usd(monthly),
                },
            )
        )
    return findings
