"""Realized savings: after a recommendation is implemented, what did the ledger say it saved?

The recommendation's own observation window is the baseline. The same traffic (chosen per kind:
after a model switch the agent's requests are on another model, so the "after" traffic is the
agent's operation on either model) is read from the ledger from ``implemented_at`` to now, and:

- per request (every kind but response caching): realized monthly saving =
  (baseline cost per request - after cost per request) x after requests x 30 / after days —
  normalising by requests keeps a busier or quieter month from passing for a saving or a loss;
- response caching removes requests instead of making them cheaper, so it compares spend per day:
  (baseline cost per day - after cost per day) x 30.

A negative figure is kept: the change cost money. Measuring needs at least
``SPENDGUARD_RECOMMENDATION_MIN_VERIFY_DAYS`` of "after" traffic; the daily job re-measures every
implemented recommendation, and ``recommendation_verify`` measures one on demand.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from config.errors import Conflict
from costs.models import UsageRecord
from pricing.calculator import format_usd, quantize_usd
from recommendations.generators.base import DAYS_PER_MONTH, MICROSECONDS_PER_DAY, _microseconds
from recommendations.models import Recommendation, RecommendationKind, RecommendationStatus


class NotMeasurable(Conflict):
    code = "not_measurable"


@dataclass(frozen=True, slots=True)
class Traffic:
    requests: int
    cost_usd: Decimal
    days: Decimal

    @property
    def per_request(self) -> Decimal:
        return self.cost_usd / self.requests if self.requests else Decimal(0)

    @property
    def per_day(self) -> Decimal:
        return self.cost_usd / self.days

    def as_json(self) -> dict:
        return {
            "requests": self.requests,
            "cost_usd": format_usd(quantize_usd(self.cost_usd)),
            "days": format_usd(self.days.quantize(Decimal("0.0001"))),
        }


def _filters(rec: Recommendation) -> tuple[Q, Q]:
    """(baseline traffic, after traffic) of a recommendation's scope."""
    scope = Q(organization_id=rec.organization_id)
    if rec.agent_id:
        scope &= Q(agent_id=rec.agent_id)
    elif rec.project_id:
        scope &= Q(project_id=rec.project_id)
    if rec.operation:
        scope &= Q(operation=rec.operation)
    if rec.kind == RecommendationKind.CHEAPER_MODEL:
        return scope & Q(model=rec.model), scope & Q(model__in=[rec.model, rec.target])
    if rec.kind == RecommendationKind.CHEAPER_PROVIDER:
        return scope & Q(model=rec.model, provider=rec.provider), scope & Q(model__in=[rec.model, rec.target])
    same = scope & Q(model=rec.model) if rec.model else scope
    return same, same


def _traffic(where: Q, start: datetime, end: datetime) -> Traffic:
    totals = UsageRecord.objects.filter(where, occurred_at__gte=start, occurred_at__lt=end).aggregate(
        requests=Count("id", filter=Q(cost_usd__isnull=False)), cost=Sum("cost_usd")
    )
    days = Decimal(_microseconds(end - start)) / MICROSECONDS_PER_DAY
    return Traffic(requests=totals["requests"], cost_usd=totals["cost"] or Decimal(0), days=days)


@transaction.atomic
def recommendation_verify(*, recommendation: Recommendation, now: datetime | None = None) -> Recommendation:
    """Measure an implemented recommendation's realized monthly saving from the ledger and store it
    (with the figures behind it in ``realized_evidence``). Raises ``NotMeasurable`` (409) when it is
    not implemented or has too little traffic since."""
    now = now or timezone.now()
    rec = Recommendation.objects.select_for_update().get(pk=recommendation.pk)
    if rec.status != RecommendationStatus.IMPLEMENTED:
        raise NotMeasurable("Only an implemented recommendation has realized savings.", extra={"status": rec.status})
    min_days = settings.SPENDGUARD_RECOMMENDATION_MIN_VERIFY_DAYS
    if now - rec.implemented_at < timedelta(days=min_days):
        raise NotMeasurable(
            f"Realized savings are measured after {min_days} day(s) of traffic since implementation.",
            extra={"measurable_from": (rec.implemented_at + timedelta(days=min_days)).isoformat()},
        )
    baseline_where, after_where = _filters(rec)
    baseline = _traffic(baseline_where, rec.window_start, rec.window_end)
    after = _traffic(after_where, rec.implemented_at, now)
    if rec.kind == RecommendationKind.RESPONSE_CACHE:
        method = "per_day"
        realized = (baseline.per_day - after.per_day) * DAYS_PER_MONTH
    else:
        method = "per_request"
        if not baseline.requests or not after.requests:
            raise NotMeasurable("No priced requests of this traffic in the baseline or since implementation.")
        realized = (baseline.per_request - after.per_request) * after.requests * DAYS_PER_MONTH / after.days
    rec.realized_monthly_saving_usd = quantize_usd(realized)
    rec.realized_measured_at = now
    rec.realized_evidence = {
        "method": method,
        "baseline": {"start": rec.window_start.isoformat(), "end": rec.window_end.isoformat(), **baseline.as_json()},
        "after": {"start": rec.implemented_at.isoformat(), "end": now.isoformat(), **after.as_json()},
        "estimated_monthly_saving_usd": format_usd(rec.estimated_monthly_saving_usd),
        "realized_monthly_saving_usd": format_usd(rec.realized_monthly_saving_usd),
    }
    rec.save(update_fields=["realized_monthly_saving_usd", "realized_measured_at", "realized_evidence"])
    return rec


def implemented_verify_all(*, now: datetime | None = None) -> int:
    """Re-measure every implemented recommendation that has enough traffic since; returns how many."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.SPENDGUARD_RECOMMENDATION_MIN_VERIFY_DAYS)
    measured = 0
    due = Recommendation.objects.filter(status=RecommendationStatus.IMPLEMENTED, implemented_at__lte=cutoff)
    for rec in due.iterator():
        try:
            recommendation_verify(recommendation=rec, now=now)
        except NotMeasurable:
            continue
        measured += 1
    return measured
