"""Shared fixtures for the budgets tests: prices with hand-picked rates, budgets, ledger rows and
clients for the budget-check API.

Rates are chosen so every amount is exact: ``gpt-4o`` at 2.5 / 10 USD per 1M tokens makes a check of
1,000 prompt tokens and 500 max output tokens cost 0.0025 + 0.005 = 0.0075 USD (7,500,000 nano-USD).
"""

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from budgets.models import Budget
from budgets.services.enforcement import check_caches_clear
from costs.models import CostSource, UsageRecord
from costs.services.api_keys import api_key_create
from pricing.models import ModelPrice, PriceSource
from tests.budgets.stores import store  # noqa: F401  (a fixture: run a test on both spend stores)

CHECK_URL = "/api/v1/budget-checks/"
SINCE_2000 = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
# 1,000 prompt tokens + 500 max output tokens of gpt-4o (2.5 / 10 USD per 1M tokens).
GPT4O_CHECK_USD = Decimal("0.0075")
GPT4O_CHECK_NANOS = 7_500_000


def release_url(reservation_id) -> str:
    return f"{CHECK_URL}{reservation_id}/release/"


@pytest.fixture(autouse=True)
def _fresh_check_caches():
    """Prices are cached per process by the check; every test starts from its own catalog."""
    check_caches_clear()
    yield
    check_caches_clear()


def make_price(model: str, **rates) -> ModelPrice:
    return ModelPrice.objects.create(
        model=model,
        source=PriceSource.MANUAL,
        effective_from=SINCE_2000,
        **{f"{kind}_usd_per_mtok": Decimal(rate) for kind, rate in rates.items()},
    )


@pytest.fixture
def prices(db) -> dict[str, ModelPrice]:
    return {
        "gpt-4o": make_price("gpt-4o", input="2.5", output="10"),
        "gpt-4o-mini": make_price("gpt-4o-mini", input="0.15", output="0.6"),
    }


def make_budget(**fields) -> Budget:
    """A budget with test defaults: hard, monthly, UTC, USD limit as a string."""
    fields.setdefault("name", "budget")
    fields["limit_usd"] = Decimal(str(fields.get("limit_usd", "10")))
    if "grace_percent" in fields:
        fields["grace_percent"] = Decimal(str(fields["grace_percent"]))
    if "organization" not in fields:
        node = fields.get("agent") or fields.get("sprint") or fields.get("project")
        project = getattr(node, "project", node)
        fields["organization"] = project.organization
    return Budget.objects.create(**fields)


def ledger_row(*, agent, cost_usd: str | None, occurred_at: dt.datetime, model: str = "gpt-4o", sprint=None):
    """A ledger row written straight to the table (no ingest hook), as if recorded before the
    budget existed."""
    return UsageRecord.objects.create(
        organization=agent.project.organization,
        project=agent.project,
        agent=agent,
        sprint=sprint,
        request_id=f"ledger-{uuid.uuid4().hex}",
        model=model,
        prompt_tokens=100,
        completion_tokens=10,
        occurred_at=occurred_at,
        cost_usd=Decimal(cost_usd) if cost_usd is not None else None,
        cost_source=CostSource.COMPUTED if cost_usd is not None else CostSource.UNPRICED,
    )


def client_for(**scope) -> APIClient:
    _, secret = api_key_create(name="check key", **scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def check_body(**fields) -> dict:
    body = {"model": "gpt-4o", "prompt_tokens": 1000, "max_output_tokens": 500}
    body.update(fields)
    return body


@pytest.fixture
def agent_client(organization, project, agent) -> APIClient:
    return client_for(organization=organization, project=project, agent=agent)


@pytest.fixture
def project_client(organization, project) -> APIClient:
    return client_for(organization=organization, project=project)
