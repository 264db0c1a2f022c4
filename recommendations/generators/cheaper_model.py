"""Cheaper model: for each agent × operation × model (and the provider it was called through), the
substitute that would have cost least on that traffic's actual token mix — its cached and
cache-write share, batch flag and long-context band kept, all at today's catalog prices (the current
cost too, so both sides of the saving use the same prices).

Who may stand in for the current model (helpers in :mod:`recommendations.catalog`):

- a current price of the same ``mode`` whose ``max_input_tokens`` / ``max_output_tokens`` (when
  known) hold the largest prompt / completion seen, with every ``supports_*`` flag that is true on
  the current model also true on it (an agent may rely on any of them: tools, vision, JSON schema …),
  that charges something, and that is not the same model elsewhere (that is
  :mod:`~recommendations.generators.cheaper_provider`'s finding);
- when the operator put the current model in a quality tier (``ModelTier``): only models of that
  family, any provider — *vetted*, high confidence; effort low on the same provider, medium when it
  means another provider's account and SDK;
- otherwise: only models of the same provider and deployment route (no region or reseller change)
  and no fine-tunes (``ft:`` prices are for your own fine-tuned models) — labelled as not marked
  equivalent, low confidence, ``"vetted": false``. A model of another family is never proposed.
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
    deployment_route,
    missing_capabilities,
    price_evidence,
    same_model_key,
    tier_families,
    traffic_groups,
)
from recommendations.generators.base import Finding, GenerationContext
from recommendations.models import Confidence, Effort, RecommendationKind
from recommendations.selectors import token_mix

UNVETTED = "not marked as an equivalent in the quality tiers — check quality before switching"


def generate(context: GenerationContext) -> list[Finding]:
    """One finding per (agent, operation, model, provider) whose best substitute saves at least the
    minimum a month; traffic whose model has no current catalog price is skipped."""
    groups = traffic_groups(
        token_mix(context), key=lambda r: (r.project_id, r.agent_id, r.operation, r.model, r.provider)
    )
    if not groups:
        return []
    book = PriceBook((model, provider) for (_, _, _, model, provider) in groups)
    families = tier_families()
    agents = dict(Agent.objects.filter(pk__in={key[1] for key in groups}).values_list("pk", "name"))
    pools: dict[tuple, list[ModelPrice]] = {}  # candidates per (current price, family), loaded once
    findings = []
    for (project_id, agent_id, operation, model, provider), traffic in groups.items():
        current = book.resolve(model, provider, context.end)
        if current is None:
            continue
        family = families.get(current.model) or families.get(model)
        pool_key = (current.pk, family)
        if pool_key not in pools:
            pools[pool_key] = _candidates(
                current, family, families, provider=current.provider or provider, context=context
            )
        current_cost = traffic.cost_at(current)
        best: tuple[ModelPrice, Decimal] | None = None
        for candidate in pools[pool_key]:
            if not traffic.fits(candidate) or missing_capabilities(current, candidate):
                continue
            cost = traffic.cost_at(candidate)
            if best is None or cost < best[1]:
                best = (candidate, cost)
        if best is None:
            continue
        candidate, candidate_cost = best
        monthly = quantize_usd(context.monthly(current_cost - candidate_cost))
        if not context.clears_minimum(monthly):
            continue
        findings.append(
            _finding(
                context,
                traffic,
                current=current,
                candidate=candidate,
                family=family,
                costs=(current_cost, candidate_cost, monthly),
                scope=(project_id, agent_id, agents.get(agent_id, f"agent {agent_id}"), operation, model, provider),
            )
        )
    return findings


def _candidates(
    current: ModelPrice, family: str | None, families: dict[str, str], *, provider: str, context: GenerationContext
) -> list[ModelPrice]:
    """Prices that may replace ``current`` before the traffic-specific checks (window, capabilities)."""
    if family is not None:
        members = [name for name, other in families.items() if other == family]
        pool = current_prices(at=context.end, mode=current.mode, models=members)
    else:
        route = deployment_route(current.model)
        pool = [
            price
            for price in current_prices(at=context.end, mode=current.mode, provider=provider)
            if deployment_route(price.model) == route and not price.model.startswith("ft:")
        ]
    key = same_model_key(current.model)
    return [
        price
        for price in pool
        if price.model != current.model
        and charges_something(price)
        and (key is None or same_model_key(price.model) != key)
    ]


def _finding(context, traffic: Traffic, *, current, candidate, family, costs, scope) -> Finding:
    current_cost, candidate_cost, monthly = costs
    project_id, agent_id, agent_name, operation, model, provider = scope
    vetted = family is not None
    same_provider = candidate.provider == (current.provider or provider)
    days = f"{context.days.normalize():f}"
    called = f"{model} ({provider})" if provider else model
    title = f"Switch {agent_name} ({operation}) from {model} to {candidate.model}"
    if vetted:
        quality = f'{candidate.model} is in the same quality tier ("{family}") as {current.model}.'
    else:
        title += " — not marked as an equivalent in the quality tiers"
        quality = f"{candidate.model} is {UNVETTED}."
    explanation = (
        f"In the last {days} days {agent_name} sent {traffic.requests:,} {operation} requests to {called}: "
        f"{traffic.tokens_text()}. At today's prices they cost {usd_text(current_cost)} on {current.model} and "
        f"would cost {usd_text(candidate_cost)} on {candidate.model} ({candidate.provider or 'no provider set'}), "
        f"which fits the largest prompt ({traffic.max_prompt_tokens:,} tokens) and completion "
        f"({traffic.max_completion_tokens:,} tokens) seen and has every capability {current.model} lists. "
        f"That is {usd_text(current_cost - candidate_cost)} less in the window, about {usd_text(monthly)} a month. "
        f"{quality}"
    )
    if not same_provider:
        explanation += f" Switching moves this traffic from {current.provider or provider} to {candidate.provider}."
    return Finding(
        kind=RecommendationKind.CHEAPER_MODEL,
        title=title,
        explanation=explanation,
        monthly_saving_usd=monthly,
        baseline_cost_usd=quantize_usd(current_cost),
        baseline_requests=traffic.requests,
        confidence=Confidence.HIGH if vetted else Confidence.LOW,
        effort=Effort.LOW if same_provider else Effort.MEDIUM,
        project_id=project_id,
        agent_id=agent_id,
        operation=operation,
        model=model,
        provider=provider,
        target=candidate.model,
        evidence={
            **traffic.token_evidence(),
            "window_days": days,
            "current_cost_usd": format_usd(quantize_usd(current_cost)),
            "candidate_cost_usd": format_usd(quantize_usd(candidate_cost)),
            "window_saving_usd": format_usd(quantize_usd(current_cost - candidate_cost)),
            "current_price_id": current.pk,
            "candidate_price_id": candidate.pk,
            "current": price_evidence(current),
            "candidate": price_evidence(candidate),
            "vetted": vetted,
            "tier_family": family,
        },
    )
