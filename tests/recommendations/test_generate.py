"""recommendations_generate: findings become one row per opportunity; regeneration refreshes,
reopens and expires rows and leaves the operator's verdicts alone; the priority formula."""

import datetime as dt
from decimal import Decimal

import pytest

from recommendations.generators.base import Finding, GenerationContext
from recommendations.models import Recommendation, RecommendationKind, RecommendationStatus
from recommendations.services.generate import priority_score, recommendations_generate
from recommendations.services.lifecycle import recommendation_implement, recommendation_reject
from tests.factories import AgentFactory
from tests.recommendations.conftest import NOW

pytestmark = pytest.mark.django_db
KIND = RecommendationKind.CHEAPER_MODEL


def finding(agent, saving="12.5", *, model="gpt-4o", target="gpt-4o-mini", **fields) -> Finding:
    fields = {
        "kind": KIND,
        "title": f"Switch {agent.name} from {model} to {target}",
        "explanation": "because",
        "monthly_saving_usd": Decimal(saving),
        "baseline_cost_usd": Decimal("20"),
        "baseline_requests": 100,
        "confidence": "high",
        "effort": "low",
        "project_id": agent.project_id,
        "agent_id": agent.pk,
        "model": model,
        "target": target,
        "evidence": {"requests": 100},
        **fields,
    }
    return Finding(**fields)


def run(org, found, *, now=NOW, **scope):
    """Generate with one fake generator that returns ``found`` and records the context it got."""
    seen: list[GenerationContext] = []

    def generate(context):
        seen.append(context)
        return list(found)

    report = recommendations_generate(organization=org, now=now, generators={KIND: generate}, **scope)
    return report, seen[0]


def test_a_finding_becomes_an_open_recommendation(org, agent):
    report, context = run(org, [finding(agent)])

    rec = Recommendation.objects.get()
    assert report.created == [rec.pk]
    assert (context.start, context.end) == (NOW - dt.timedelta(days=30), NOW)
    assert rec.status == RecommendationStatus.OPEN
    assert (rec.kind, rec.agent, rec.project, rec.model, rec.target) == (
        KIND,
        agent,
        agent.project,
        "gpt-4o",
        "gpt-4o-mini",
    )
    assert rec.estimated_monthly_saving_usd == Decimal("12.5")
    assert rec.priority_score == Decimal("12.5000")  # high (1.0) / low effort (1)
    assert (rec.window_start, rec.window_end, rec.created_at, rec.refreshed_at) == (context.start, NOW, NOW, NOW)
    assert rec.evidence == {"requests": 100}


def test_priority_formula():
    assert priority_score(monthly_saving_usd=Decimal(100), confidence="high", effort="low") == Decimal("100.0000")
    assert priority_score(monthly_saving_usd=Decimal(300), confidence="low", effort="high") == Decimal("22.5000")
    assert priority_score(monthly_saving_usd=Decimal(10), confidence="medium", effort="medium") == Decimal("3.0000")


def test_regeneration_refreshes_the_same_row_even_with_a_new_target(org, agent):
    run(org, [finding(agent, "12.5")])
    later = NOW + dt.timedelta(days=1)
    report, _ = run(org, [finding(agent, "20", target="gpt-4.1-nano")], now=later)

    rec = Recommendation.objects.get()
    assert report.refreshed == [rec.pk] and not report.created
    assert (rec.estimated_monthly_saving_usd, rec.target, rec.refreshed_at, rec.created_at) == (
        Decimal("20"),
        "gpt-4.1-nano",
        later,
        NOW,
    )


def test_an_opportunity_no_longer_found_expires_and_reopens_when_found_again(org, agent):
    run(org, [finding(agent)])
    report, _ = run(org, [], now=NOW + dt.timedelta(days=1))
    rec = Recommendation.objects.get()
    assert report.expired == [rec.pk]
    assert rec.status == RecommendationStatus.EXPIRED
    assert rec.status_reason == "Not found in the 30 days up to 2026-12-01 12:00 UTC."

    report, _ = run(org, [finding(agent, "3")], now=NOW + dt.timedelta(days=2))
    rec.refresh_from_db()
    assert report.reopened == [rec.pk]
    assert (rec.status, rec.status_reason, rec.estimated_monthly_saving_usd) == ("open", "", Decimal("3"))
    assert Recommendation.objects.count() == 1


def test_rejected_and_implemented_stay_as_the_operator_left_them(org, agent):
    other = AgentFactory(project=agent.project, name="writer")
    run(org, [finding(agent), finding(other)])
    rejected, implemented = Recommendation.objects.order_by("agent__name")  # planner, writer
    recommendation_reject(recommendation=rejected, reason="quality matters here")
    recommendation_implement(recommendation=implemented, implemented_at=NOW)

    report, _ = run(org, [finding(agent, "99"), finding(other, "99")], now=NOW + dt.timedelta(days=1))
    assert sorted(report.kept) == sorted([rejected.pk, implemented.pk]) and not report.created
    rejected.refresh_from_db()
    implemented.refresh_from_db()
    assert (rejected.status, rejected.estimated_monthly_saving_usd) == ("rejected", Decimal("12.5"))
    assert (implemented.status, implemented.estimated_monthly_saving_usd) == ("implemented", Decimal("12.5"))
    # Not found any more: they do not expire either.
    run(org, [], now=NOW + dt.timedelta(days=2))
    assert set(Recommendation.objects.values_list("status", flat=True)) == {"rejected", "implemented"}


def test_accepted_is_refreshed_but_never_expired(org, agent):
    from recommendations.services.lifecycle import recommendation_accept

    run(org, [finding(agent)])
    recommendation_accept(recommendation=Recommendation.objects.get())
    run(org, [finding(agent, "40")], now=NOW + dt.timedelta(days=1))
    run(org, [], now=NOW + dt.timedelta(days=2))
    rec = Recommendation.objects.get()
    assert (rec.status, rec.estimated_monthly_saving_usd) == ("accepted", Decimal("40"))


def test_a_scoped_run_expires_only_inside_its_scope(org, agent):
    other = AgentFactory(project=agent.project, name="writer")
    run(org, [finding(agent), finding(other)])
    _, context = run(org, [], now=NOW + dt.timedelta(days=1), agent=other)

    assert (context.agent_id, context.project_id) == (other.pk, other.project_id)
    statuses = dict(Recommendation.objects.values_list("agent__name", "status"))
    assert statuses == {"planner": "open", "writer": "expired"}


def test_a_run_limited_to_some_kinds_expires_only_those_kinds(org, agent):
    run(org, [finding(agent)])
    recommendations_generate(
        organization=org, now=NOW + dt.timedelta(days=1), generators={RecommendationKind.OUTPUT_CAP: lambda c: []}
    )
    assert Recommendation.objects.get().status == "open"


def test_other_organizations_rows_are_untouched(org, agent):
    other_agent = AgentFactory(name="planner")  # another organization
    run(other_agent.project.organization, [finding(other_agent)])
    run(org, [])
    assert Recommendation.objects.get().status == "open"
