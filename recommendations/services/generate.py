"""Generation: run every generator over an organization's recent ledger and keep one row per
opportunity (ADR 0007).

Regeneration matches findings to rows by fingerprint (unique per organization in the database):
an open or accepted row gets the new figures, an expired one reopens, and rejected or implemented
rows are left as the operator left them (a rejected opportunity is not suggested again). An open row
whose opportunity is no longer found in its scope expires. Runs for one organization are serialised
on the organization's row, so the beat job, an on-demand run and an alert-triggered run may overlap.
"""

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from costs.models import Agent, Organization, Project
from recommendations.generators.base import Finding, GenerationContext
from recommendations.generators.registry import GENERATORS
from recommendations.models import CONFIDENCE_WEIGHTS, EFFORT_WEIGHTS, Recommendation, RecommendationStatus
from recommendations.services.lifecycle import status_set

logger = logging.getLogger(__name__)
GENERATOR = "generator"  # who changed a status when no operator did

PRIORITY_QUANTUM = Decimal("0.0001")
REFRESHABLE = (RecommendationStatus.OPEN, RecommendationStatus.ACCEPTED)
# What the operator decided stays decided: regeneration never touches these.
SETTLED = (RecommendationStatus.REJECTED, RecommendationStatus.IMPLEMENTED)


@dataclass
class GenerationReport:
    created: list[int] = field(default_factory=list)
    refreshed: list[int] = field(default_factory=list)
    reopened: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)  # rejected / implemented rows found again


def priority_score(*, monthly_saving_usd: Decimal, confidence: str, effort: str) -> Decimal:
    """monthly saving x confidence weight / effort weight (weights in recommendations.models)."""
    score = monthly_saving_usd * CONFIDENCE_WEIGHTS[confidence] / EFFORT_WEIGHTS[effort]
    return score.quantize(PRIORITY_QUANTUM, rounding=ROUND_HALF_UP)


def generation_context(
    *, organization: Organization, now: datetime, project: Project | None = None, agent: Agent | None = None
) -> GenerationContext:
    days = settings.SPENDGUARD_RECOMMENDATION_WINDOW_DAYS
    return GenerationContext(
        organization=organization,
        start=now - timedelta(days=days),
        end=now,
        min_monthly_saving=Decimal(settings.SPENDGUARD_RECOMMENDATION_MIN_MONTHLY_SAVING_USD),
        project_id=agent.project_id if agent is not None else (project.pk if project is not None else None),
        agent_id=agent.pk if agent is not None else None,
    )


def recommendations_generate(
    *,
    organization: Organization,
    project: Project | None = None,
    agent: Agent | None = None,
    now: datetime | None = None,
    generators: Mapping[str, Callable[[GenerationContext], list[Finding]]] | None = None,
) -> GenerationReport:
    """Find savings in the organization's last ``SPENDGUARD_RECOMMENDATION_WINDOW_DAYS`` days (only in
    ``project`` or ``agent`` when given) and record them; returns what changed. ``generators`` (kind ->
    function, default all) limits the run, and the expiry, to those kinds."""
    now = now or timezone.now()
    generators = GENERATORS if generators is None else generators
    context = generation_context(organization=organization, now=now, project=project, agent=agent)
    findings: dict[str, Finding] = {}
    for generate in generators.values():
        for finding in generate(context):
            # Generators emit one finding per subject; keep the larger saving if two ever collide.
            known = findings.get(finding.fingerprint)
            if known is None or finding.monthly_saving_usd > known.monthly_saving_usd:
                findings[finding.fingerprint] = finding
    return _record(context, findings, kinds=set(generators), now=now)


@transaction.atomic
def _record(context: GenerationContext, findings: dict[str, Finding], *, kinds: set[str], now: datetime):
    # One generation per organization at a time: the second waits, then sees the first's rows.
    Organization.objects.select_for_update().filter(pk=context.organization.pk).get()
    existing = {
        rec.fingerprint: rec
        for rec in Recommendation.objects.select_for_update().filter(organization=context.organization)
    }
    report = GenerationReport()
    for fingerprint, finding in findings.items():
        rec = existing.get(fingerprint)
        if rec is None:
            rec = Recommendation(
                organization=context.organization, fingerprint=fingerprint, created_at=now, refreshed_at=now
            )
            _apply(rec, finding, context, now)
            rec.save()
            report.created.append(rec.pk)
        elif rec.status in SETTLED:
            report.kept.append(rec.pk)
        else:
            if rec.status == RecommendationStatus.EXPIRED:
                status_set(rec, status=RecommendationStatus.OPEN, reason="", now=now, label=GENERATOR)
                report.reopened.append(rec.pk)
            else:
                report.refreshed.append(rec.pk)
            _apply(rec, finding, context, now)
            rec.save()
    for rec in existing.values():
        if (
            rec.status == RecommendationStatus.OPEN
            and rec.fingerprint not in findings
            and rec.kind in kinds
            and _in_scope(rec, context)
        ):
            reason = f"Not found in the {context.days.normalize():f} days up to {now:%Y-%m-%d %H:%M} UTC."
            fields = status_set(rec, status=RecommendationStatus.EXPIRED, reason=reason, now=now, label=GENERATOR)
            rec.save(update_fields=fields)
            report.expired.append(rec.pk)
    logger.info(
        "Recommendations for %s: %d new, %d refreshed, %d reopened, %d expired",
        context.organization.slug,
        len(report.created),
        len(report.refreshed),
        len(report.reopened),
        len(report.expired),
    )
    return report


def _in_scope(rec: Recommendation, context: GenerationContext) -> bool:
    if context.agent_id is not None:
        return rec.agent_id == context.agent_id
    if context.project_id is not None:
        return rec.project_id == context.project_id
    return True


def _apply(rec: Recommendation, finding: Finding, context: GenerationContext, now: datetime) -> None:
    rec.kind = finding.kind
    rec.project_id = finding.project_id
    rec.agent_id = finding.agent_id
    rec.operation, rec.model = finding.operation, finding.model
    rec.provider, rec.target = finding.provider, finding.target
    rec.title = finding.title[:300]
    rec.explanation = finding.explanation
    rec.evidence = finding.evidence
    rec.window_start, rec.window_end = context.start, context.end
    rec.baseline_requests = finding.baseline_requests
    rec.baseline_cost_usd = finding.baseline_cost_usd
    rec.estimated_monthly_saving_usd = finding.monthly_saving_usd
    rec.confidence, rec.effort = finding.confidence, finding.effort
    rec.priority_score = priority_score(
        monthly_saving_usd=finding.monthly_saving_usd, confidence=finding.confidence, effort=finding.effort
    )
    rec.refreshed_at = now
