"""Savings recommendations, the operator's verdict on each, and the quality tiers that say which
models may stand in for which.

A recommendation is one opportunity (a kind, a scope, a subject such as "agent planner on gpt-4o →
gpt-4o-mini") with the numbers behind it. It is one row for its whole life: regeneration refreshes
the figures of the row with the same ``fingerprint`` (a database rule, so two generator runs can
never duplicate one), and the status moves open → accepted → implemented, or to rejected / expired.
Money is Decimal USD (12 places, as the ledger).
"""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

from costs.models import MONEY_FIELD_KWARGS


class RecommendationKind(models.TextChoices):
    CHEAPER_MODEL = "cheaper_model", "Cheaper model"
    RESPONSE_CACHE = "response_cache", "Response caching"
    PROMPT_CACHE = "prompt_cache", "Provider prompt caching"
    BATCH_API = "batch_api", "Batch API"
    OUTPUT_CAP = "output_cap", "Output cap (max_tokens)"
    CHEAPER_PROVIDER = "cheaper_provider", "Cheaper provider"


class RecommendationStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"
    IMPLEMENTED = "implemented", "Implemented"
    EXPIRED = "expired", "Expired"


class Confidence(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


class Effort(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


# The priority score (documented in docs/adr/0007-recommendations.md):
#   priority = estimated monthly saving (USD) x confidence weight / effort weight
# so a sure, easy $100 outranks an uncertain, hard $300.
CONFIDENCE_WEIGHTS = {
    Confidence.HIGH: Decimal("1.0"),
    Confidence.MEDIUM: Decimal("0.6"),
    Confidence.LOW: Decimal("0.3"),
}
EFFORT_WEIGHTS = {Effort.LOW: Decimal(1), Effort.MEDIUM: Decimal(2), Effort.HIGH: Decimal(4)}


class Recommendation(models.Model):
    """One savings opportunity in one organization, scoped to the organization, a project or an agent."""

    organization = models.ForeignKey("costs.Organization", on_delete=models.CASCADE, related_name="recommendations")
    kind = models.CharField(max_length=32, choices=RecommendationKind.choices)
    # Scope: the organization (both null), a project, or an agent (with its project).
    project = models.ForeignKey(
        "costs.Project", on_delete=models.CASCADE, null=True, blank=True, related_name="recommendations"
    )
    agent = models.ForeignKey(
        "costs.Agent", on_delete=models.CASCADE, null=True, blank=True, related_name="recommendations"
    )
    # The traffic it is about ("" = any) and what it proposes (a model, a provider, a max_tokens cap ...).
    operation = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=255, blank=True, default="")
    provider = models.CharField(max_length=64, blank=True, default="")
    target = models.CharField(max_length=255, blank=True, default="")
    # sha256 of (kind, scope, subject): the identity regeneration matches on.
    fingerprint = models.CharField(max_length=64)

    title = models.CharField(max_length=300)
    explanation = models.TextField()
    # The numbers behind the estimate (token sums, requests, rates, costs as decimal strings).
    evidence = models.JSONField(default=dict, blank=True)
    # The observation (baseline) window the estimate was computed on, and its spend there (USD).
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    baseline_requests = models.PositiveBigIntegerField(default=0)
    baseline_cost_usd = models.DecimalField(**MONEY_FIELD_KWARGS)
    estimated_monthly_saving_usd = models.DecimalField(**MONEY_FIELD_KWARGS)
    confidence = models.CharField(max_length=8, choices=Confidence.choices)
    effort = models.CharField(max_length=8, choices=Effort.choices)
    priority_score = models.DecimalField(max_digits=24, decimal_places=4)

    status = models.CharField(max_length=16, choices=RecommendationStatus.choices, default=RecommendationStatus.OPEN)
    status_reason = models.TextField(blank=True, default="")
    status_changed_at = models.DateTimeField(null=True, blank=True)
    status_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Who acted when there is no user ("api-key:<prefix>").
    status_changed_by_label = models.CharField(max_length=200, blank=True, default="")
    implemented_at = models.DateTimeField(null=True, blank=True)
    # Realized savings, measured from the ledger after implementation against the baseline window.
    realized_monthly_saving_usd = models.DecimalField(null=True, blank=True, **MONEY_FIELD_KWARGS)
    realized_measured_at = models.DateTimeField(null=True, blank=True)
    realized_evidence = models.JSONField(default=dict, blank=True)

    created_at = models.DateTimeField()
    refreshed_at = models.DateTimeField()

    class Meta:
        ordering = ["-priority_score", "-estimated_monthly_saving_usd", "id"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "fingerprint"], name="recommendation_one_per_fingerprint"),
            models.CheckConstraint(
                condition=Q(agent__isnull=True) | Q(project__isnull=False), name="recommendation_agent_has_project"
            ),
            models.CheckConstraint(
                condition=Q(estimated_monthly_saving_usd__gte=0), name="recommendation_saving_non_negative"
            ),
            models.CheckConstraint(
                condition=~Q(status="rejected") | ~Q(status_reason=""), name="recommendation_rejection_has_reason"
            ),
            models.CheckConstraint(
                condition=~Q(status="implemented") | Q(implemented_at__isnull=False),
                name="recommendation_implemented_has_time",
            ),
        ]
        indexes = [models.Index(fields=["organization", "status", "-priority_score"], name="recommendation_open_idx")]

    def __str__(self) -> str:
        return self.title

    @property
    def scope_label(self) -> str:
        if self.agent_id:
            return f"agent {self.agent.name}"
        if self.project_id:
            return f"project {self.project.slug}"
        return "organization"


class ModelTier(models.Model):
    """An operator's quality tiers: models in the same ``family`` are acceptable substitutes for each
    other (e.g. family "fast" = gpt-4o-mini, claude-haiku-4-5, gemini-2.0-flash). The cheaper-model
    generator recommends within a family as vetted; a model outside the family is recommended only
    when labelled as such (low confidence, "not marked as equivalent")."""

    model = models.CharField(max_length=255, unique=True, help_text="Catalog model name.")
    family = models.CharField(max_length=100, help_text="Models with the same family are acceptable substitutes.")
    note = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["family", "model"]

    def __str__(self) -> str:
        return f"{self.model} ({self.family})"
