"""The check context cache (budgets.services.check_context, ADR 0003 "Check context cache").

A check after the first reads nothing but runs its reservation statement, which proceeds only if
the organization's check context version has not moved. Each test makes a first check (filling
this process's cache), changes something the way an operator or another process would — often
through the ORM or plain SQL, not a service, since the database triggers must catch every
writer — and shows the very next check acts on it.
"""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from budgets.models import Budget, CheckContextVersion
from budgets.services import check_context
from budgets.services.enforcement import budget_check
from costs.models import Agent, AgentStatus, ApiKey, Organization
from costs.services.api_keys import api_key_create
from costs.services.scope import scope_for_key
from tests.budgets.conftest import CHECK_URL, check_body, client_for, make_budget
from tests.factories import SprintFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def version_of(organization) -> int:
    row = CheckContextVersion.objects.filter(organization_id=organization.pk).first()
    return row.version if row else 0


@pytest.fixture
def agent_client(organization, project, agent):
    return client_for(organization=organization, project=project, agent=agent)


def test_a_repeated_check_reads_nothing_through_the_orm(prices, organization, agent_client):
    make_budget(organization=organization, limit_usd="10")
    first = agent_client.post(CHECK_URL, check_body(), format="json")
    with CaptureQueriesContext(connection) as queries:
        second = agent_client.post(CHECK_URL, check_body(), format="json")
    assert (first.status_code, second.status_code) == (201, 201)
    # The key, agent, budgets and periods came from the cache; the reservation statement runs on its
    # own prepared cursor (not captured here), in a savepoint because the test holds a transaction.
    sql = [q["sql"] for q in queries.captured_queries]
    assert [s for s in sql if not s.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))] == []
    assert second.json()["budgets"][0]["reserved_usd"] == "0.015"


def test_pausing_the_agent_in_the_database_refuses_the_next_check(prices, organization, agent, agent_client):
    make_budget(organization=organization, limit_usd="10")
    assert agent_client.post(CHECK_URL, check_body(), format="json").status_code == 201
    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.PAUSED)  # as an admin edit would

    response = agent_client.post(CHECK_URL, check_body(), format="json")

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "agent_paused"


def test_a_revoked_key_is_refused_by_the_next_check(prices, organization, project, agent):
    make_budget(organization=organization, limit_usd="10")
    api_key, secret = api_key_create(organization=organization, project=project, agent=agent, name="k")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.post(CHECK_URL, check_body(), format="json").status_code == 201
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=timezone.now())

    response = client.post(CHECK_URL, check_body(), format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_revoked"


def test_a_budget_added_or_lowered_acts_on_the_next_check(prices, organization, agent, agent_client):
    make_budget(organization=organization, limit_usd="10")
    assert agent_client.post(CHECK_URL, check_body(), format="json").status_code == 201

    tight = make_budget(agent=agent, limit_usd="0.01", name="tight")
    second = agent_client.post(CHECK_URL, check_body(), format="json")
    assert second.status_code == 201
    assert [b["id"] for b in second.json()["budgets"]][-1] == tight.pk

    Budget.objects.filter(pk=tight.pk).update(limit_usd="0.001")  # the period row keeps its limit...
    tight.refresh_from_db()
    tight.save()  # ...until the budget is saved the way the admin and services do
    third = agent_client.post(CHECK_URL, check_body(), format="json")
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "budget_exceeded"


def test_a_model_override_set_after_a_check_is_used_by_the_next(prices, organization, agent, agent_client):
    make_budget(organization=organization, limit_usd="10")
    assert agent_client.post(CHECK_URL, check_body(), format="json").json()["model"] == "gpt-4o"
    Agent.objects.filter(pk=agent.pk).update(model_override="gpt-4o-mini")

    response = agent_client.post(CHECK_URL, check_body(), format="json")

    assert (response.status_code, response.json()["model"], response.json()["reserved_usd"]) == (
        201,
        "gpt-4o-mini",
        "0.00045",
    )


def test_a_sprint_started_after_a_check_brings_its_budget_in(prices, organization, project, agent, agent_client):
    make_budget(organization=organization, limit_usd="10")
    assert len(agent_client.post(CHECK_URL, check_body(), format="json").json()["budgets"]) == 1
    today = timezone.now().date()
    sprint = SprintFactory(project=project, start_date=today, end_date=today + dt.timedelta(days=6))
    sprint_budget = make_budget(sprint=sprint, limit_usd="5", period="sprint", name="sprint")

    response = agent_client.post(CHECK_URL, check_body(), format="json")

    assert [b["id"] for b in response.json()["budgets"]][-1] == sprint_budget.pk


def test_the_clock_moves_a_cached_check_into_the_next_period(prices, organization, project, agent):
    """A context is used only until its periods end: the next day's check reserves in the next day."""
    daily = make_budget(organization=organization, limit_usd="10", period="daily")
    _, secret = api_key_create(organization=organization, project=project, agent=agent, name="k")

    def check(at):
        api_key, version = check_context.api_key_for_check(secret=secret)
        return budget_check(
            scope=scope_for_key(api_key),
            agent=None,
            project=None,
            sprint=None,
            model="gpt-4o",
            prompt_tokens=1000,
            max_output_tokens=500,
            request_id=None,
            now=at,
            context_version=version,
        )

    evening = check(dt.datetime(2026, 11, 10, 23, 59, 59, tzinfo=dt.UTC))
    morning = check(dt.datetime(2026, 11, 11, 0, 0, 1, tzinfo=dt.UTC))

    assert [line.period_start for line in evening.budgets] == [dt.datetime(2026, 11, 10, tzinfo=dt.UTC)]
    assert [line.period_start for line in morning.budgets] == [dt.datetime(2026, 11, 11, tzinfo=dt.UTC)]
    assert [line.reserved_nanos for line in morning.budgets] == [7_500_000]  # a fresh period
    assert daily.periods.count() == 2


def test_the_version_moves_on_what_a_check_reads_and_not_on_spend(prices, organization, project, agent):
    budget = make_budget(organization=organization, limit_usd="10")
    api_key, _ = api_key_create(organization=organization, project=project, agent=agent, name="k")
    start = version_of(organization)

    # Bookkeeping and spend: no change.
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now())
    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.ACTIVE)  # same value
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO budgets_budgetperiod (budget_id, starts_at, ends_at, limit_nanos, ceiling_nanos, "
            "spent_nanos, reserved_nanos, created_at, updated_at) VALUES (%s, now(), NULL, 1, 1, 0, 0, now(), now()) "
            "RETURNING id",
            [budget.pk],
        )
        period_id = cursor.fetchone()[0]
    after_insert = version_of(organization)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE budgets_budgetperiod SET spent_nanos = 5, reserved_nanos = 7 WHERE id = %s", [period_id])
    assert version_of(organization) == after_insert == start + 1  # the new period row counted, spend not

    # Each of these is read by a check: each moves the version.
    steps = [
        lambda: Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.PAUSED),
        lambda: Agent.objects.filter(pk=agent.pk).update(model_override="gpt-4o-mini"),
        lambda: ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=timezone.now()),
        lambda: Budget.objects.filter(pk=budget.pk).update(name="renamed"),
        lambda: SprintFactory(project=project),
        lambda: Organization.objects.filter(pk=organization.pk).update(timezone="Europe/Berlin"),
        lambda: project.__class__.objects.filter(pk=project.pk).update(slug="renamed"),
    ]
    for step in steps:
        before = version_of(organization)
        step()
        assert version_of(organization) == before + 1, step


def test_another_organizations_changes_do_not_move_this_one(prices, organization, agent):
    other = Organization.objects.create(slug="other", name="Other")
    start = version_of(organization)
    make_budget(organization=other, limit_usd="1")
    assert version_of(organization) == start
    assert version_of(other) == 1
