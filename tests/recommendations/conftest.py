"""Crafted ledgers and catalogs for the recommendation tests: every amount is known by hand.

``price(...)`` writes a manual catalog row (rates in USD / 1M tokens, in effect since 2026-01-01);
``ledger_row(...)`` writes one ledger row directly (as ingestion would have: ``cost_usd`` is what you
pass, so a test states the charged amount). The window of a generation at ``NOW`` is the 30 days
before it (SPENDGUARD_RECOMMENDATION_WINDOW_DAYS), so ``IN_WINDOW`` rows count and older ones don't.
"""

import datetime as dt
import itertools
from decimal import Decimal

import pytest

from costs.models import CostSource, UsageRecord
from pricing.models import ModelPrice, PriceSource
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
IN_WINDOW = NOW - dt.timedelta(days=10)
PRICES_FROM = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_ids = itertools.count()


def price(model: str, *, input: str, output: str, provider: str = "", mode: str = "chat", **fields) -> ModelPrice:
    """A current manual price; other rates (``cache_read_usd_per_mtok=...``), ``max_input_tokens``,
    ``capabilities`` ... by keyword."""
    return ModelPrice.objects.create(
        model=model,
        provider=provider,
        mode=mode,
        source=PriceSource.MANUAL,
        input_usd_per_mtok=Decimal(input),
        output_usd_per_mtok=Decimal(output),
        effective_from=PRICES_FROM,
        **{
            key: Decimal(value) if key.endswith("_per_mtok") and value is not None else value
            for key, value in fields.items()
        },
    )


def ledger_row(agent, *, cost: str | None, occurred_at: dt.datetime = IN_WINDOW, **fields) -> UsageRecord:
    """One ledger row of ``agent`` (model gpt-4o / openai, 1,000 prompt + 200 completion tokens unless
    given); ``cost=None`` makes it unpriced."""
    fields.setdefault("model", "gpt-4o")
    fields.setdefault("provider", "openai")
    fields.setdefault("prompt_tokens", 1000)
    fields.setdefault("completion_tokens", 200)
    return UsageRecord.objects.create(
        organization=agent.project.organization,
        project=agent.project,
        agent=agent,
        request_id=f"rec-{next(_ids)}",
        occurred_at=occurred_at,
        cost_usd=None if cost is None else Decimal(cost),
        cost_source=CostSource.UNPRICED if cost is None else CostSource.COMPUTED,
        **fields,
    )


@pytest.fixture
def org(db):
    return OrganizationFactory(slug="acme", name="Acme")


@pytest.fixture
def project(org):
    return ProjectFactory(organization=org, slug="search", name="Search")


@pytest.fixture
def agent(project):
    return AgentFactory(project=project, name="planner")
