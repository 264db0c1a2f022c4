"""/api/v1/budgets/: budgets with live status for API keys (read) and staff users (read + write)."""

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db.models import F
from freezegun import freeze_time
from rest_framework.test import APIClient

from budgets.models import AuditAction, AuditEntry, Budget, BudgetPeriod
from budgets.services.budgets import budget_create
from budgets.services.periods import period_bounds, period_ensure
from costs.models import UsageRecord
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory, SprintFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/budgets/"
NOW = dt.datetime(2026, 11, 4, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def frozen(request):
    # Not around schema generation: it imports pydantic (drf-spectacular's contrib), which would keep
    # freezegun's fake datetime class in its type tables and break later imports of litellm.
    if request.node.name.startswith("test_the_openapi_schema"):
        yield
        return
    with freeze_time(NOW):
        yield


@pytest.fixture
def staff_client():
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("olivia", is_staff=True))
    return client


def spend(agent, cost: str, *, request_id: str, at: dt.datetime = NOW - dt.timedelta(hours=1)):
    return UsageRecord.objects.create(
        organization=agent.project.organization,
        project=agent.project,
        agent=agent,
        request_id=request_id,
        model="gpt-4o",
        prompt_tokens=100,
        completion_tokens=10,
        occurred_at=at,
        cost_usd=Decimal(cost),
        cost_source="computed",
    )


@pytest.fixture
def budgets(organization, project, agent):
    """acme: an org, a project, a sprint and an agent budget in different states; globex: one."""
    sprint = SprintFactory(project=project, slug="s1", start_date=dt.date(2026, 11, 2), end_date=dt.date(2026, 11, 15))
    writer = AgentFactory(project=project, name="writer")
    other_project = ProjectFactory(organization=organization, slug="support")
    spend(agent, "4.5", request_id="r1")
    spend(writer, "0.5", request_id="r2")
    made = {
        "org": budget_create(organization=organization, name="acme monthly", limit_usd=Decimal(100)),
        "project": budget_create(
            organization=organization,
            project=project,
            name="search daily",
            limit_usd=Decimal("5.2"),
            period="daily",
            enforcement="soft",
        ),
        "sprint": budget_create(organization=organization, sprint=sprint, name="sprint s1", limit_usd=Decimal(50)),
        "agent": budget_create(
            organization=organization,
            agent=agent,
            name="planner daily",
            limit_usd=Decimal(4),
            period="daily",
            action="downgrade",
            downgrade_model="gpt-4o-mini",
        ),
        "support": budget_create(
            organization=organization, project=other_project, name="support", limit_usd=Decimal(1), is_active=False
        ),
    }
    globex = OrganizationFactory(slug="globex")
    made["globex"] = budget_create(organization=globex, name="globex", limit_usd=Decimal(1))
    # The agent budget has a live period with a hold on it.
    period, _ = period_ensure(made["agent"], period_bounds(made["agent"], NOW))
    BudgetPeriod.objects.filter(pk=period.pk).update(reserved_nanos=F("reserved_nanos") + 250_000_000)
    return made


def expected(budget: Budget, **live) -> dict:
    node_project = (
        budget.project or (budget.sprint and budget.sprint.project) or (budget.agent and budget.agent.project)
    )
    return {
        "id": budget.pk,
        "organization": budget.organization.slug,
        "scope": budget.scope,
        "project": node_project.slug if node_project else None,
        "sprint": budget.sprint.slug if budget.sprint else None,
        "agent": budget.agent.name if budget.agent else None,
        "name": budget.name,
        "limit_usd": live.pop("limit_usd"),
        "period": budget.period,
        "custom_start": None,
        "custom_end": None,
        "timezone": "UTC",
        "model_filter": "",
        "enforcement": budget.enforcement,
        "grace_percent": "0",
        "thresholds": [50, 75, 90, 100],
        "action": budget.action,
        "downgrade_model": budget.downgrade_model,
        "is_active": budget.is_active,
        "alert_emails": budget.alert_emails,
        "created_at": "2026-11-04T12:00:00Z",
        "updated_at": "2026-11-04T12:00:00Z",
        **live,
    }


def names(response) -> list[str]:
    return [item["name"] for item in response.json()["results"]]


def test_an_organization_key_lists_its_budgets_with_live_status(budgets, organization, authed_client):
    response = authed_client(organization=organization).get(URL)

    assert response.status_code == 200
    assert response.json() == {
        "count": 5,
        "next": None,
        "previous": None,
        "results": [
            expected(
                budgets["org"],
                limit_usd="100",
                period_start="2026-11-01T00:00:00Z",
                period_end="2026-12-01T00:00:00Z",
                spent_usd="5",
                reserved_usd="0",
                remaining_usd="95",
                status="ok",
            ),
            expected(
                budgets["agent"],
                limit_usd="4",
                period_start="2026-11-04T00:00:00Z",
                period_end="2026-11-05T00:00:00Z",
                spent_usd="4.5",
                reserved_usd="0.25",
                remaining_usd="0",
                status="exceeded",
            ),
            expected(
                budgets["project"],
                limit_usd="5.2",
                period_start="2026-11-04T00:00:00Z",
                period_end="2026-11-05T00:00:00Z",
                spent_usd="5",
                reserved_usd="0",
                remaining_usd="0.2",
                status="warning",
            ),
            expected(
                budgets["sprint"],
                limit_usd="50",
                period_start="2026-11-01T00:00:00Z",
                period_end="2026-12-01T00:00:00Z",
                spent_usd="0",
                reserved_usd="0",
                remaining_usd="50",
                status="ok",
            ),
            expected(
                budgets["support"],
                limit_usd="1",
                period_start="2026-11-01T00:00:00Z",
                period_end="2026-12-01T00:00:00Z",
                spent_usd="0",
                reserved_usd="0",
                remaining_usd="1",
                status="inactive",
            ),
        ],
    }


@pytest.mark.parametrize(
    ("query", "expected_names"),
    [
        ("status=exceeded", ["planner daily"]),
        ("status=warning", ["search daily"]),
        ("status=ok", ["acme monthly", "sprint s1"]),
        ("status=inactive", ["support"]),
        ("scope=organization", ["acme monthly"]),
        ("scope=agent", ["planner daily"]),
        ("project=search", ["planner daily", "search daily", "sprint s1"]),
        ("project=search&scope=project", ["search daily"]),
        ("sprint=s1", ["sprint s1"]),
        ("agent=planner", ["planner daily"]),
        ("period=daily", ["planner daily", "search daily"]),
        ("enforcement=soft", ["search daily"]),
        ("is_active=false", ["support"]),
        ("status=ok&period=monthly&is_active=true", ["acme monthly", "sprint s1"]),
    ],
)
def test_filters(budgets, organization, authed_client, query, expected_names):
    response = authed_client(organization=organization).get(f"{URL}?{query}")

    assert response.status_code == 200
    assert names(response) == expected_names
    assert response.json()["count"] == len(expected_names)


def test_a_bad_filter_value_is_a_validation_error(budgets, organization, authed_client):
    response = authed_client(organization=organization).get(f"{URL}?status=broke")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert list(response.json()["error"]["fields"]) == ["status"]


def test_pagination_with_a_computed_status_filter(budgets, organization, authed_client):
    client = authed_client(organization=organization)

    first = client.get(f"{URL}?status=ok&limit=1").json()
    second = client.get(f"{URL}?status=ok&limit=1&offset=1").json()

    assert (first["count"], [r["name"] for r in first["results"]]) == (2, ["acme monthly"])
    assert first["next"].endswith("limit=1&offset=1&status=ok") or "offset=1" in first["next"]
    assert [r["name"] for r in second["results"]] == ["sprint s1"]


def test_project_and_agent_keys_see_the_budgets_that_cover_them(budgets, organization, project, agent, authed_client):
    support = project.organization.projects.get(slug="support")

    assert names(authed_client(organization=organization, project=project).get(URL)) == [
        "acme monthly",
        "planner daily",
        "search daily",
        "sprint s1",
    ]
    assert names(authed_client(organization=organization, project=support).get(URL)) == ["acme monthly", "support"]
    writer = project.agents.get(name="writer")
    assert names(authed_client(organization=organization, project=project, agent=writer).get(URL)) == [
        "acme monthly",
        "search daily",
        "sprint s1",
    ]
    assert names(authed_client(organization=organization, project=project, agent=agent).get(URL)) == [
        "acme monthly",
        "planner daily",
        "search daily",
        "sprint s1",
    ]


def test_detail_and_tenancy(budgets, organization, authed_client):
    client = authed_client(organization=organization)

    own = client.get(f"{URL}{budgets['agent'].pk}/")
    foreign = client.get(f"{URL}{budgets['globex'].pk}/")

    assert own.status_code == 200
    assert own.json() == expected(
        budgets["agent"],
        limit_usd="4",
        period_start="2026-11-04T00:00:00Z",
        period_end="2026-11-05T00:00:00Z",
        spent_usd="4.5",
        reserved_usd="0.25",
        remaining_usd="0",
        status="exceeded",
    )
    assert foreign.status_code == 404
    assert foreign.json() == {"error": {"code": "not_found", "message": "No such budget.", "fields": {}}}
    assert names(client.get(URL)).count("globex") == 0


def test_api_keys_cannot_write(budgets, organization, authed_client):
    client = authed_client(organization=organization)
    budget = budgets["org"]

    created = client.post(URL, {"organization": "acme", "name": "x", "limit_usd": "1"}, format="json")
    patched = client.patch(f"{URL}{budget.pk}/", {"limit_usd": "1"}, format="json")
    deleted = client.delete(f"{URL}{budget.pk}/")

    for response in (created, patched, deleted):
        assert response.status_code == 403
        assert response.json() == {
            "error": {
                "code": "operator_only",
                "message": "API keys may only read budgets; operators change them.",
                "fields": {},
            }
        }
    assert Budget.objects.count() == 6
    assert Budget.objects.get(pk=budget.pk).limit_usd == Decimal(100)
    # (The agent budget's downgrade action ran when its period was created over the limit: that is the system's.)
    assert not AuditEntry.objects.filter(action__in=[AuditAction.BUDGET_CHANGED, AuditAction.BUDGET_DELETED]).exists()


def test_non_staff_sessions_and_anonymous_callers_are_refused(budgets):
    user_client = APIClient()
    user_client.force_login(get_user_model().objects.create_user("dave"))

    assert user_client.get(URL).status_code == 403
    assert user_client.get(URL).json()["error"]["code"] == "operator_only"
    assert (
        user_client.post(URL, {"organization": "acme", "name": "x", "limit_usd": "1"}, format="json").status_code == 403
    )
    anonymous = APIClient().get(URL)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    assert Budget.objects.count() == 6


def test_staff_see_every_organization(budgets, staff_client):
    assert names(staff_client.get(URL)) == [
        "acme monthly",
        "planner daily",
        "search daily",
        "sprint s1",
        "support",
        "globex",
    ]
    assert names(staff_client.get(f"{URL}?organization=globex")) == ["globex"]


def test_staff_create_an_agent_budget(organization, project, agent, staff_client):
    spend(agent, "0.75", request_id="earlier")
    body = {
        "organization": "acme",
        "project": "search",
        "agent": "planner",
        "name": "planner $1/day",
        "limit_usd": "1",
        "period": "daily",
        "timezone": "Europe/Berlin",
        "enforcement": "hard",
        "grace_percent": "10",
        "thresholds": [80, 100],
        "alert_emails": "lead@example.com",
    }

    response = staff_client.post(URL, body, format="json")

    assert response.status_code == 201, response.json()
    budget = Budget.objects.get()
    assert response.json() == {
        **expected(
            budget,
            limit_usd="1",
            period_start="2026-11-03T23:00:00Z",
            period_end="2026-11-04T23:00:00Z",
            # Usage from before the budget existed counts from the first moment.
            spent_usd="0.75",
            reserved_usd="0",
            remaining_usd="0.25",
            status="ok",
        ),
        "timezone": "Europe/Berlin",
        "grace_percent": "10",
        "thresholds": [80, 100],
        "alert_emails": "lead@example.com",
    }
    assert (budget.agent, budget.scope, budget.grace_percent) == (agent, "agent", Decimal(10))
    # Its current period was started when it was created (spend from the ledger).
    assert budget.periods.get().spent_nanos == 750_000_000
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor.username, entry.budget) == (AuditAction.BUDGET_CREATED, "olivia", budget)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"organization": "nope", "name": "x", "limit_usd": "1"}, {"organization": ["No such organization."]}),
        ({"organization": "acme", "name": "x"}, {"limit_usd": ["This field is required."]}),
        ({"organization": "acme", "name": "x", "limit_usd": "0"}, {"limit_usd": ["The limit must be more than 0."]}),
        (
            {"organization": "acme", "name": "x", "limit_usd": "1", "agent": "planner"},
            {"project": ["Name the project of the sprint or agent."]},
        ),
        (
            {"organization": "acme", "name": "x", "limit_usd": "1", "project": "search", "agent": "ghost"},
            {"agent": ["No agent 'ghost' in project 'search'."]},
        ),
        (
            {"organization": "acme", "name": "x", "limit_usd": "1", "action": "downgrade"},
            {"downgrade_model": ["Name the cheaper model to downgrade to."]},
        ),
        (
            {"organization": "acme", "name": "x", "limit_usd": "1", "period": "fortnightly"},
            {"period": ['"fortnightly" is not a valid choice.']},
        ),
        ({"organization": "acme", "name": "x", "limit_usd": "1", "colour": "red"}, {"colour": ["Unknown field."]}),
    ],
)
def test_create_validation_errors_write_nothing(organization, agent, staff_client, body, fields):
    response = staff_client.post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["fields"] == fields
    assert not Budget.objects.exists()
    assert not AuditEntry.objects.exists()


def test_staff_patch_applies_at_once_and_is_audited(budgets, staff_client):
    budget = budgets["agent"]

    response = staff_client.patch(f"{URL}{budget.pk}/", {"limit_usd": "10", "name": "planner"}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["limit_usd"], body["remaining_usd"], body["status"]) == ("planner", "10", "5.25", "ok")
    period = BudgetPeriod.objects.get(budget=budget)
    assert (period.limit_nanos, period.reserved_nanos) == (10_000_000_000, 250_000_000)
    entry = AuditEntry.objects.get(action=AuditAction.BUDGET_CHANGED)
    assert entry.changes == {"name": {"old": "planner daily", "new": "planner"}, "limit_usd": {"old": "4", "new": "10"}}
    assert entry.actor.username == "olivia"


def test_staff_patch_moves_a_budget_and_refuses_another_organization(budgets, staff_client):
    budget = budgets["agent"]

    moved = staff_client.patch(f"{URL}{budget.pk}/", {"project": "search"}, format="json")
    refused = staff_client.patch(f"{URL}{budget.pk}/", {"organization": "globex"}, format="json")

    assert moved.status_code == 200
    assert (moved.json()["scope"], moved.json()["project"], moved.json()["agent"]) == ("project", "search", None)
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"] == {"organization": ["A budget cannot move to another organization."]}
    assert Budget.objects.get(pk=budget.pk).organization.slug == "acme"


def test_staff_delete(budgets, staff_client):
    budget = budgets["sprint"]

    response = staff_client.delete(f"{URL}{budget.pk}/")

    assert response.status_code == 204
    assert not Budget.objects.filter(pk=budget.pk).exists()
    assert AuditEntry.objects.get(action=AuditAction.BUDGET_DELETED).changes["id"] == {"old": budget.pk, "new": None}
    assert staff_client.delete(f"{URL}{budget.pk}/").status_code == 404


def test_the_openapi_schema_describes_the_budgets_api(staff_client):
    schema = staff_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    assert set(schema["paths"]["/api/v1/budgets/"]) == {"get", "post"}
    assert set(schema["paths"]["/api/v1/budgets/{id}/"]) >= {"get", "patch", "delete"}
    parameters = {p["name"] for p in schema["paths"]["/api/v1/budgets/"]["get"]["parameters"]}
    assert parameters >= {
        "scope",
        "project",
        "sprint",
        "agent",
        "period",
        "enforcement",
        "status",
        "is_active",
        "limit",
    }
    output = schema["components"]["schemas"]["BudgetOutput"]["properties"]
    assert {"spent_usd", "reserved_usd", "remaining_usd", "status", "period_start"} <= set(output)
