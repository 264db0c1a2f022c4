"""The beat tasks: the nightly run fans out one generation per organization (eager here)."""

import pytest

from recommendations.models import Recommendation
from recommendations.services import generate as generate_service
from recommendations.tasks import generate_recommendations, verify_implemented_recommendations
from tests.factories import AgentFactory
from tests.recommendations.test_generate import KIND, finding

pytestmark = pytest.mark.django_db


def test_the_nightly_run_generates_for_every_organization(monkeypatch):
    agents = [AgentFactory(name="planner"), AgentFactory(name="writer")]  # two organizations
    monkeypatch.setattr(
        generate_service,
        "GENERATORS",
        {KIND: lambda context: [finding(a) for a in agents if a.project.organization_id == context.organization.pk]},
    )

    assert generate_recommendations.delay().get() == {}
    assert sorted(Recommendation.objects.values_list("organization__slug", "agent__name")) == sorted(
        (a.project.organization.slug, a.name) for a in agents
    )
    one = agents[0].project.organization
    counts = generate_recommendations.delay(one.pk).get()
    assert counts == {one.slug: {"created": 0, "refreshed": 1, "reopened": 0, "expired": 0}}
    assert generate_recommendations.delay(10**9).get() == {}  # an organization deleted since


def test_verify_task_counts_what_it_measured():
    assert verify_implemented_recommendations.delay().get() == 0
