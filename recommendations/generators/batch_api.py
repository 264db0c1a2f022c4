"""Batch API: traffic that does not need an answer now, sent one request at a time to a model whose
provider bills its batch API at a discount (usually 50 %).

Which traffic is latency-insensitive is the operator's statement, not a guess: a request counts when
its tags say so, with either convention

- ``{"latency": "insensitive"}``, or
- ``{"batchable": true}`` (what a litellm ``request_tags=["batchable"]`` becomes on import).

Nothing is inferred from the traffic itself (no end user, embeddings, night-time runs): those hints
are wrong often enough (query-time embeddings, back-office tools people wait on) that a saving built
on them would not deserve the high confidence a tagged one does. An agent that wants the
recommendation tags its offline work.

Counted: tagged, non-batch requests of models whose current price has batch rates; the saving is the
tokens priced at today's standard rates minus the same tokens at its batch rates (long-context tiers
and cache rates as :mod:`pricing.calculator` bills batch requests). The tagged subset is summed with
:func:`recommendations.selectors.token_mix` (same banding, so each band prices exactly) narrowed
to the tagged rows.

Confidence is high (the operator said the traffic can wait); effort is medium (submit and collect
batch jobs instead of calling the API inline).
"""

from collections import defaultdict
from decimal import Decimal

from django.db.models import Q

from costs.models import Agent
from pricing.calculator import Rates, format_usd, usd_text
from pricing.selectors import PriceBook
from recommendations.generators.base import Finding, GenerationContext
from recommendations.models import Confidence, Effort, RecommendationKind
from recommendations.selectors import MixRow, token_mix

LATENCY_INSENSITIVE = Q(tags__latency="insensitive") | Q(tags__batchable=True)
TAG_CONVENTION = '{"latency": "insensitive"} or {"batchable": true}'
TARGET = "batch API"


def latency_insensitive_mix(context: GenerationContext) -> list[MixRow]:
    """The tagged, not yet batched requests of the window."""
    return token_mix(context, where=LATENCY_INSENSITIVE & Q(is_batch=False))


def generate(context: GenerationContext) -> list[Finding]:
    groups: dict[tuple, list[MixRow]] = defaultdict(list)
    for row in latency_insensitive_mix(context):
        groups[(row.project_id, row.agent_id, row.model, row.provider)].append(row)
    book = PriceBook((model, provider) for _, _, model, provider in groups)
    agents = Agent.objects.in_bulk({agent_id for _, agent_id, _, _ in groups})
    findings = []
    for (project_id, agent_id, model, provider), rows in sorted(groups.items()):
        price = book.resolve(model, provider, context.end)
        if price is None:
            continue
        rates = Rates.from_price(price)
        if not rates.has_batch_rates:
            continue
        standard = sum((row.priced(rates, batch=False).total_usd for row in rows), Decimal(0))
        batch = sum((row.priced(rates, batch=True).total_usd for row in rows), Decimal(0))
        saving = standard - batch
        monthly = context.monthly(saving)
        if not context.clears_minimum(monthly):
            continue
        requests = sum(row.requests for row in rows)
        baseline_cost = sum((row.cost_usd for row in rows), Decimal(0))
        name = agents[agent_id].name
        findings.append(
            Finding(
                kind=RecommendationKind.BATCH_API,
                title=f"Send the latency-insensitive traffic of {name} on {model} through the batch API",
                explanation=(
                    f"{name} sent {requests} requests to {model} tagged as able to wait ({TAG_CONVENTION}), "
                    f"one at a time. At today's prices they cost {usd_text(standard)}; through {model}'s batch "
                    f"API (input ${price.batch_input_usd_per_mtok.normalize():f}, output "
                    f"${price.batch_output_usd_per_mtok.normalize():f} per 1M tokens) {usd_text(batch)}: "
                    f"{usd_text(saving)} saved in {context.days.normalize():f} days, about {usd_text(monthly)} "
                    "a month. Batch jobs finish within 24 hours."
                ),
                monthly_saving_usd=monthly,
                baseline_cost_usd=baseline_cost,
                baseline_requests=requests,
                confidence=Confidence.HIGH,
                effort=Effort.MEDIUM,
                project_id=project_id,
                agent_id=agent_id,
                model=model,
                provider=provider,
                target=TARGET,
                evidence={
                    "tag_convention": TAG_CONVENTION,
                    "requests": requests,
                    "prompt_tokens": sum(row.prompt_tokens for row in rows),
                    "completion_tokens": sum(row.completion_tokens for row in rows),
                    "cached_tokens": sum(row.cached_tokens for row in rows),
                    "input_usd_per_mtok": format_usd(price.input_usd_per_mtok),
                    "output_usd_per_mtok": format_usd(price.output_usd_per_mtok),
                    "batch_input_usd_per_mtok": format_usd(price.batch_input_usd_per_mtok),
                    "batch_output_usd_per_mtok": format_usd(price.batch_output_usd_per_mtok),
                    "baseline_cost_usd": format_usd(baseline_cost),
                    "standard_cost_usd": format_usd(standard),
                    "batch_cost_usd": format_usd(batch),
                    "window_saving_usd": format_usd(saving),
                    "monthly_saving_usd": format_usd(monthly),
                },
            )
        )
    return findings
