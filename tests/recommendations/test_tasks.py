"""The beat tasks: the nightly run fans out one generation per organization (eager here)."""

import datetime as dt
from decimal import Decimal

import pytest
from freezegun import freeze_time

from recommendations.models import Recommendation
from recommendations.services import generate as generate_service
from recommendations.services.generate import recommendations_generate
from recommendations.services.lifecycle import recommendation_implement
from recommendations.tasks import generate_recommendations, verify_implemented_recommendations
from tests.factories import AgentFactory
from tests.recommendations.conftest import NOW, ledger_row
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


def test_verify_task_measures_implemented_recommendations(org, agent):
    run_once = {KIND: lambda context: [finding(agent)]}
    recommendations_generate(organization=org, now=NOW, generators=run_once)
    rec = Recommendation.objects.get()
    ledger_row(agent, cost="0.02", occurred_at=NOW - dt.timedelta(days=20))  # baseline: $0.02 a request
    done = NOW + dt.timedelta(hours=1)  # implemented after the window it was estimated on
    recommendation_implement(recommendation=rec, implemented_at=done, now=done)
    ledger_row(agent, cost="0.01", occurred_at=done + dt.timedelta(hours=1))  # after: $0.01 a request

    with freeze_time(done + dt.timedelta(days=1)):
        assert verify_implemented_recommendations.delay().get() == 1

    rec.refresh_from_db()
    assert rec.realized_monthly_saving_usd == Decimal("0.3")  # (0.02 - 0.01) x 1 request x 30 / 1 day
