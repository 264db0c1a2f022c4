"""factory_boy factories for the recommendations app: a valid row with known figures, no generator run."""

import datetime as dt
from decimal import Decimal

import factory

from recommendations.models import Confidence, Effort, Recommendation, RecommendationKind
from tests.factories import AgentFactory
from tests.recommendations.conftest import NOW


class RecommendationFactory(factory.django.DjangoModelFactory):
    """An open cheaper-model recommendation for an agent, observed over the 30 days before ``NOW``:
    $12.50 of gpt-4o traffic (1,000 requests) that would save $10 a month on gpt-4o-mini."""

    class Meta:
        model = Recommendation

    agent = factory.SubFactory(AgentFactory)
    project = factory.SelfAttribute("agent.project")
    organization = factory.SelfAttribute("project.organization")
    kind = RecommendationKind.CHEAPER_MODEL
    operation = "chat"
    model = "gpt-4o"
    provider = "openai"
    target = "gpt-4o-mini"
    fingerprint = factory.Sequence(lambda n: f"{n:064x}")
    title = factory.Sequence(lambda n: f"Recommendation {n}: gpt-4o → gpt-4o-mini")
    explanation = "gpt-4o-mini does this agent's work for a fraction of gpt-4o's price."
    evidence = factory.LazyFunction(
        lambda: {"requests": 1000, "current_cost_usd": "12.5", "candidate_cost_usd": "2.5", "vetted": True}
    )
    window_start = NOW - dt.timedelta(days=30)
    window_end = NOW
    baseline_requests = 1000
    baseline_cost_usd = Decimal("12.5")
    estimated_monthly_saving_usd = Decimal("10")
    confidence = Confidence.HIGH
    effort = Effort.LOW
    priority_score = Decimal("10")
    created_at = NOW
    refreshed_at = NOW
