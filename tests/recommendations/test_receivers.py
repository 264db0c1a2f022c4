"""A budget threshold alert triggers generation for the budget's scope, after the booking commits,
once per scope per debounce window."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.cache import cache
from freezegun import freeze_time

from budgets.models import Budget, BudgetAlert
from recommendations.generators.base import GenerationContext
from recommendations.receivers import debounce_key
from recommendations.services import generate as generate_service
from tests.budgets.conftest import client_for, make_price

pytestmark = pytest.mark.django_db


@pytest.fixture
def contexts(monkeypatch) -> list[GenerationContext]:
    """Replace the generators with one that records each run's context."""
    seen: list[GenerationContext] = []
    monkeypatch.setattr(generate_service, "GENERATORS", {"cheaper_model": lambda context: seen.append(context) or []})
    return seen


def record(n: int) -> dict:
    return {
        "request_id": f"req-{n}",
        "agent": "planner",
        "model": "gpt-4o",
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "occurred_at": f"2026-11-02T10:{n:02d}:00Z",
    }


@freeze_time("2026-11-02T12:00:00Z")
def test_a_threshold_alert_generates_for_the_budgets_project_once(
    organization, project, agent, contexts, django_capture_on_commit_callbacks
):
    make_price("gpt-4o", input="2.5", output="10")  # $0.0035 per record
    Budget.objects.create(organization=organization, project=project, name="daily", limit_usd=Decimal("0.014"))
    cache.delete(debounce_key(organization.pk, project.pk, None))
    client = client_for(organization=organization, project=project)

    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/api/v1/usage/", record(1), format="json").status_code == 201
    assert contexts == []  # 25 %: no threshold crossed
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/api/v1/usage/", record(2), format="json").status_code == 201
    assert BudgetAlert.objects.filter(threshold_percent=50).exists()
    [context] = contexts
    assert (context.organization, context.project_id, context.agent_id) == (organization, project.pk, None)
    assert context.end == dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)

    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/api/v1/usage/", record(3), format="json").status_code == 201
    assert BudgetAlert.objects.filter(threshold_percent=75).exists()
    assert len(contexts) == 1  # debounced: the 75 % crossing asks nothing new
