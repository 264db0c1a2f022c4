"""Cheaper provider: the same model bought from another provider the catalog lists it under, priced
on the agent's actual token mix (cached share, batch flag and long-context band kept) at today's
prices on both sides.

"The same model" is :func:`recommendations.catalog.same_model_key` — exact names after stripping
the ``provider/`` prefix (``gpt-4o`` = ``azure/gpt-4o``; Vertex's ``@date`` = ``-date``); regional
deployments, Bedrock names and ``…latest`` aliases are never matched. The other price must have the
same ``mode``, a named provider different from the current one, limits that hold the largest prompt
and completion seen, every ``supports_*`` flag the current model has, and a non-zero price.

Confidence is high (the model does not change); effort is medium (another account, keys, perhaps an
SDK). One finding per (agent, model, provider), over all operations.
"""

from decimal import Decimal

from costs.models import Agent
from pricing.calculator import format_usd, quantize_usd, usd_text
from pricing.models import ModelPrice
from pricing.selectors import PriceBook
from recommendations.catalog import (
    Traffic,
    charges_something,
    current_prices,
    missing_capabilities,
    price_evidence,
    same_model_key,
    traffic_groups,
)
from recommendations.generators.base import Finding, GenerationContext
from recommendations.models import Confidence, Effort, RecommendationKind
from recommendations.selectors import token_mix


def generate(context: GenerationContext) -> list[Finding]:
    """One finding per (agent, model, provider) whose cheapest other provider saves at least the
    minimum a month; traffic whose model has no current catalog price is skipped."""
    groups = traffic_groups(token_mix(context), key=lambda r: (r.project_id, r.agent_id, r.model, r.provider))
    if not groups:
        return []
    book = PriceBook((model, provider) for (_, _, model, provider) in groups)
    agents = dict(Agent.objects.filter(pk__in={key[1] for key in groups}).values_list("pk", "name"))
    by_mode: dict[str, dict[str, list[ModelPrice]]] = {}  # mode -> same-model key -> current prices
    findings = []
    for (project_id, agent_id, model, provider), traffic in groups.items():
        current = book.resolve(model, provider, context.end)
        key = same_model_key(current.model) if current is not None else None
        if current is None or key is None:
            continue
        if current.mode not in by_mode:
            by_mode[current.mode] = _by_key(current_prices(at=context.end, mode=current.mode))
        own = {current.provider or provider, provider}
        current_cost = traffic.cost_at(current)
        best: tuple[ModelPrice, Decimal] | None = None
        for other in by_mode[current.mode].get(key, ()):
            if (
                not other.provider
                or other.provider in own
                or not charges_something(other)
                or not traffic.fits(other)
                or missing_capabilities(current, other)
            ):
                continue
            cost = traffic.cost_at(other)
            if best is None or cost < best[1]:
                best = (other, cost)
        if best is None:
            continue
        other, other_cost = best
        monthly = quantize_usd(context.monthly(current_cost - other_cost))
        if not context.clears_minimum(monthly):
            continue
        scope = (project_id, agent_id, agents.get(agent_id, f"agent {agent_id}"), model, provider)
        findings.append(
            _finding(
                context,
                traffic,
                current=current,
                other=other,
                key=key,
                costs=(current_cost, other_cost, monthly),
                scope=scope,
            )
        )
    return findings


def _finding(context, traffic: Traffic, *, current, other, key, costs, scope) -> Finding:
    current_cost, other_cost, monthly = costs
    project_id, agent_id, agent_name, model, provider = scope
    days = f"{context.days.normalize():f}"
    current_provider = current.provider or provider
    return Finding(
        kind=RecommendationKind.CHEAPER_PROVIDER,
        title=f"Buy {model} for {agent_name} from {other.provider} ({other.model}) instead of {current_provider}",
        explanation=(
            f"In the last {days} days {agent_name} sent {traffic.requests:,} requests to {model} "
            f"({current_provider}): {traffic.tokens_text()}. At today's prices they cost "
            f"{usd_text(current_cost)} as {current.model} and would cost {usd_text(other_cost)} as "
            f"{other.model} from {other.provider} — the same model, with room for the largest prompt "
            f"({traffic.max_prompt_tokens:,} tokens) and completion ({traffic.max_completion_tokens:,} "
            f"tokens) seen. That is {usd_text(current_cost - other_cost)} less in the window, about "
            f"{usd_text(monthly)} a month."
        ),
        monthly_saving_usd=monthly,
        baseline_cost_usd=quantize_usd(current_cost),
        baseline_requests=traffic.requests,
        confidence=Confidence.HIGH,
        effort=Effort.MEDIUM,
        project_id=project_id,
        agent_id=agent_id,
        model=model,
        provider=provider,
        target=other.model,
        evidence={
            **traffic.token_evidence(),
            "window_days": days,
            "same_model_key": key,
            "current_cost_usd": format_usd(quantize_usd(current_cost)),
            "candidate_cost_usd": format_usd(quantize_usd(other_cost)),
            "window_saving_usd": format_usd(quantize_usd(current_cost - other_cost)),
            "current_price_id": current.pk,
            "candidate_price_id": other.pk,
            "candidate_provider": other.provider,
            "current": price_evidence(current),
            "candidate": price_evidence(other),
        },
    )


def _by_key(prices: list[ModelPrice]) -> dict[str, list[ModelPrice]]:
    grouped: dict[str, list[ModelPrice]] = {}
    for price in prices:
        key = same_model_key(price.model)
        if key is not None:
            grouped.setdefault(key, []).append(price)
    return grouped
