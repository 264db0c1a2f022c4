"""Response caching: the same prompt sent again by the same agent to the same model could have been
answered from a cache instead of the provider.

Rules (why, where it is not obvious):

- A request counts when it succeeded and carries a ``prompt_hash``. Failed requests are left out
  entirely: nobody caches an error, and a retry after a failure is a cache *miss* (there was no answer
  to keep), so counting it as a repeat would claim a saving no cache delivers.
- Requests are grouped by (agent, model, provider, prompt_hash). The provider is part of the key
  because it is part of the opportunity's identity (its fingerprint); an agent rarely sends one model
  through two providers.
- In each group the first request (by ``occurred_at``, then id) is the miss that fills the cache; every
  later one is a hit, and the saving is what the ledger charged for those hits (``cost_usd`` as
  recorded, not re-priced: a hit costs nothing, whatever the price was). No TTL is assumed: a repeat
  anywhere in the window counts.
- The first occurrence is found with ``ROW_NUMBER()`` (PostgreSQL and SQLite alike); only the repeats
  leave the database, summed here, because Django cannot aggregate over a window-filtered queryset.

Confidence is medium: the same prompt does not guarantee the same acceptable answer (sampling at
temperature > 0, answers that depend on time or tools). Effort is medium: a cache layer to run.
"""

from collections import defaultdict
from decimal import Decimal

from django.db.models import Count, F, Sum, Window
from django.db.models.functions import RowNumber

from costs.models import Agent, UsageStatus
from pricing.calculator import format_usd, usd_text
from recommendations.generators.base import Finding, GenerationContext
from recommendations.models import Confidence, Effort, RecommendationKind

EXAMPLE_HASHES = 3  # prompt hashes quoted in the evidence, most repeated first
TARGET = "response cache"

GROUP = ("project_id", "agent_id", "model", "provider")


def generate(context: GenerationContext) -> list[Finding]:
    considered = context.ledger().filter(status=UsageStatus.SUCCESS).exclude(prompt_hash="")
    repeats = (
        considered.annotate(
            occurrence=Window(
                RowNumber(),
                partition_by=[F("agent_id"), F("model"), F("provider"), F("prompt_hash")],
                order_by=[F("occurred_at").asc(), F("id").asc()],
            )
        )
        .filter(occurrence__gt=1)
        .values_list(*GROUP, "prompt_hash", "cost_usd")
    )
    # group -> prompt_hash -> [repeat requests, their cost]
    by_group: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(lambda: [0, Decimal(0)]))
    for *group, prompt_hash, cost in repeats:
        entry = by_group[tuple(group)][prompt_hash]
        entry[0] += 1
        entry[1] += cost
    if not by_group:
        return []

    totals = {
        tuple(row[key] for key in GROUP): (row["requests"], row["cost"])
        for row in considered.values(*GROUP).annotate(requests=Count("id"), cost=Sum("cost_usd")).order_by()
    }
    agents = Agent.objects.in_bulk({group[1] for group in by_group})
    findings = []
    for group, hashes in sorted(by_group.items()):
        project_id, agent_id, model, provider = group
        saving = sum((cost for _, cost in hashes.values()), Decimal(0))
        monthly = context.monthly(saving)
        if not context.clears_minimum(monthly):
            continue
        repeat_requests = sum(count for count, _ in hashes.values())
        total_requests, baseline_cost = totals[group]
        examples = sorted(hashes.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))[:EXAMPLE_HASHES]
        name = agents[agent_id].name
        findings.append(
            Finding(
                kind=RecommendationKind.RESPONSE_CACHE,
                title=f"Cache the responses of {name} on {model}: {repeat_requests} of {total_requests} "
                "requests repeated a prompt",
                explanation=(
                    f"In the last {context.days.normalize():f} days {name} sent {len(hashes)} distinct prompts to "
                    f"{model} more than once: {repeat_requests} of its {total_requests} successful requests "
                    f"(with a prompt hash) repeated an earlier one. A response cache keyed on the prompt would "
                    f"have answered those and saved the {usd_text(saving)} they cost "
                    f"(about {usd_text(monthly)} a month). Check that the answers may be reused: "
                    "sampling at temperature > 0 or answers that depend on time or tools make repeats differ."
                ),
                monthly_saving_usd=monthly,
                baseline_cost_usd=baseline_cost,
                baseline_requests=total_requests,
                confidence=Confidence.MEDIUM,
                effort=Effort.MEDIUM,
                project_id=project_id,
                agent_id=agent_id,
                model=model,
                provider=provider,
                target=TARGET,
                evidence={
                    "repeated_prompts": len(hashes),
                    "repeat_requests": repeat_requests,
                    "total_requests": total_requests,
                    "baseline_cost_usd": format_usd(baseline_cost),
                    "window_saving_usd": format_usd(saving),
                    "monthly_saving_usd": format_usd(monthly),
                    "examples": [
                        {"prompt_hash": prompt_hash, "repeats": count, "cost_usd": format_usd(cost)}
                        for prompt_hash, (count, cost) in examples
                    ],
                },
            )
        )
    return findings
