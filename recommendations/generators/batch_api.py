"""Batch API: traffic that does not need an answer now, sent one request at a time to a model whose
provider bills its batch API at a discount (usually 50 %).

Which traffic is latency-insensitive is the operator's statement, not a guess: a request counts when
its tags say so, with either convention

- ``{"latency": "insensitive"}``, or
- ``{"batchable": true}`` (what a litellm ``request_tags=["batchable"]`` becomes on import).

Untagged traffic is *observed* as latency-insensitive only on the strongest hint: an agent × model
none of whose requests names an end user and at least ``OFF_HOURS_SHARE_PERCENT`` % of which ran off
hours (before 08:00 or from 20:00 in the organization's time zone, or at the weekend) — scheduled,
unattended work. Such a finding says it was observed, not declared, and has low confidence: query-time
embeddings or back-office tools people wait on can look the same. Tagged traffic of the same agent
and model takes precedence (one finding per agent × model).

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

from django.db.models import Count, Q
from django.db.models.functions import ExtractHour, ExtractIsoWeekDay

from costs.models import Agent
from pricing.calculator import Rates, format_usd, usd_text
from pricing.selectors import PriceBook
from recommendations.generators.base import Finding, GenerationContext
from recommendations.models import Confidence, Effort, RecommendationKind
from recommendations.selectors import MixRow, token_mix

LATENCY_INSENSITIVE = Q(tags__latency="insensitive") | Q(tags__batchable=True)
# Its negation, spelled out: a plain ~LATENCY_INSENSITIVE would also drop rows *without* the keys
# (a missing JSON key compares as NULL, and NOT NULL is not true).
NOT_LATENCY_INSENSITIVE = (~Q(tags__has_key="latency") | ~Q(tags__latency="insensitive")) & (
    ~Q(tags__has_key="batchable") | ~Q(tags__batchable=True)
)
TAG_CONVENTION = '{"latency": "insensitive"} or {"batchable": true}'
TARGET = "batch API"
OFF_HOURS_SHARE_PERCENT = 90
WORKDAY_HOURS = (8, 20)  # local [start, end)


def latency_insensitive_mix(context: GenerationContext) -> list[MixRow]:
    """The tagged, not yet batched requests of the window."""
    return token_mix(context, where=LATENCY_INSENSITIVE & Q(is_batch=False))


def observed_unattended(context: GenerationContext, *, tagged: set[tuple]) -> set[tuple]:
    """(project, agent, model, provider) of untagged, non-batch traffic that looks unattended: no end
    user on any request, and at least OFF_HOURS_SHARE_PERCENT % of requests off hours (local time)."""
    tz = context.organization.tzinfo
    start, end = WORKDAY_HOURS
    off_hours = (
        Q(local_hour__lt=start) | Q(local_hour__gte=end) | Q(local_weekday__gte=6)  # ISO: 6 = Saturday
    )
    rows = (
        context.ledger()
        .filter(is_batch=False)
        .filter(NOT_LATENCY_INSENSITIVE)
        .annotate(
            local_hour=ExtractHour("occurred_at", tzinfo=tz), local_weekday=ExtractIsoWeekDay("occurred_at", tzinfo=tz)
        )
        .values("project_id", "agent_id", "model", "provider")
        .annotate(requests=Count("id"), attended=Count("id", filter=~Q(end_user="")), off=Count("id", filter=off_hours))
    )
    return {
        key
        for row in rows
        if (key := (row["project_id"], row["agent_id"], row["model"], row["provider"])) not in tagged
        and row["attended"] == 0
        and row["off"] * 100 >= row["requests"] * OFF_HOURS_SHARE_PERCENT
    }


def generate(context: GenerationContext) -> list[Finding]:
    groups: dict[tuple, list[MixRow]] = defaultdict(list)
    for row in latency_insensitive_mix(context):
        groups[(row.project_id, row.agent_id, row.model, row.provider)].append(row)
    observed = observed_unattended(context, tagged=set(groups))
    if observed:
        untagged = token_mix(context, where=NOT_LATENCY_INSENSITIVE & Q(is_batch=False))
        for row in untagged:
            key = (row.project_id, row.agent_id, row.model, row.provider)
            if key in observed:
                groups[key].append(row)
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
        seen = (project_id, agent_id, model, provider) in observed
        why = (
            f"with no end user, {OFF_HOURS_SHARE_PERCENT}% or more of them off hours (observed, not tagged: "
            f"confirm the work can wait, then tag it {TAG_CONVENTION})"
            if seen
            else f"tagged as able to wait ({TAG_CONVENTION})"
        )
        findings.append(
            Finding(
                kind=RecommendationKind.BATCH_API,
                title=(
                    f"Send the unattended off-hours traffic of {name} on {model} through the batch API"
                    if seen
                    else f"Send the latency-insensitive traffic of {name} on {model} through the batch API"
                ),
                explanation=(
                    f"{name} sent {requests} requests to {model} {why}, "
                    f"one at a time. At today's prices they cost {usd_text(standard)}; through {model}'s batch "
                    f"API (input ${price.batch_input_usd_per_mtok.normalize():f}, output "
                    f"${price.batch_output_usd_per_mtok.normalize():f} per 1M tokens) {usd_text(batch)}: "
                    f"{usd_text(saving)} saved in {context.days.normalize():f} days, about {usd_text(monthly)} "
                    "a month. Batch jobs finish within 24 hours."
                ),
                monthly_saving_usd=monthly,
                baseline_cost_usd=baseline_cost,
                baseline_requests=requests,
                confidence=Confidence.LOW if seen else Confidence.HIGH,
                effort=Effort.MEDIUM,
                project_id=project_id,
                agent_id=agent_id,
                model=model,
                provider=provider,
                target=TARGET,
                evidence={
                    "tag_convention": TAG_CONVENTION,
                    "latency_insensitive": "observed off hours, no end user" if seen else "tagged",
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
