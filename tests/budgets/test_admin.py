"""The budgets admin, driven through real admin requests as a logged-in staff superuser."""

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.db.models import F
from django.test import Client
from django.urls import reverse
from freezegun import freeze_time

from budgets.models import (
    AuditAction,
    AuditEntry,
    Budget,
    BudgetPeriod,
    Reservation,
    ReservationHold,
    ReservationStatus,
)
from budgets.services.budgets import budget_create
from budgets.services.periods import period_bounds, period_ensure
from costs.models import Agent, AgentStatus, UsageRecord
from tests.factories import AgentFactory, ProjectFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 4, 12, 0, tzinfo=dt.UTC)
CHANGELIST = "/admin/budgets/budget/"


@pytest.fixture(autouse=True)
def frozen():
    with freeze_time(NOW):
        yield


@pytest.fixture
def operator():
    return get_user_model().objects.create_superuser("olivia", "olivia@example.com", "unused-password")


@pytest.fixture
def staff_client(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


def spend(agent, cost: str, request_id: str) -> None:
    UsageRecord.objects.create(
        organization=agent.project.organization,
        project=agent.project,
        agent=agent,
        request_id=request_id,
        model="gpt-4o",
        occurred_at=NOW - dt.timedelta(hours=1),
        cost_usd=Decimal(cost),
        cost_source="computed",
    )


def make(organization, name: str, limit: str, **fields) -> Budget:
    return budget_create(organization=organization, name=name, limit_usd=Decimal(limit), period="daily", **fields)


@pytest.fixture
def states(organization, project, agent):
    spend(agent, "9.5", "r1")
    return {
        "ok": make(organization, "org ok", "100"),
        "warning": make(organization, "project warning", "10", project=project),
        "exceeded": make(organization, "agent exceeded", "9", agent=agent),
    }


def rows(response) -> list[str]:
    return [budget.name for budget in response.context["cl"].result_list]


def test_changelist_shows_live_figures_without_a_query_per_row(
    states, staff_client, organization, django_assert_max_num_queries
):
    for n in range(10):  # more budgets must not mean more queries
        make(organization, f"extra {n}", "1000", agent=AgentFactory(project=ProjectFactory(organization=organization)))
    with django_assert_max_num_queries(16):
        response = staff_client.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    # name, organization, node, period, enforcement, limit, spent, reserved, remaining, status
    for cells in (
        ["agent exceeded", "agent: acme/search/planner", "$9", "$9.5", "$0", "exceeded"],
        ["project warning", "project: acme/search", "$10", "$9.5", "$0.5", "warning"],
        ["org ok", "organization", "$100", "$9.5", "$90.5", "ok"],
    ):
        for cell in cells:
            assert f">{cell}<" in html, cell


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=exceeded", ["agent exceeded"]),
        ("status=warning", ["project warning"]),
        ("status=ok", ["org ok"]),
        ("scope=agent", ["agent exceeded"]),
        ("scope=organization", ["org ok"]),
        ("q=warning", ["project warning"]),
    ],
)
def test_changelist_filters(states, staff_client, query, expected):
    response = staff_client.get(f"{CHANGELIST}?{query}")

    assert response.status_code == 200
    assert rows(response) == expected


def test_adding_a_budget_goes_through_the_service_and_is_audited(staff_client, organization, agent, operator):
    spend(agent, "0.4", "r1")
    response = staff_client.post(
        f"{CHANGELIST}add/",
        {
            "name": "planner $1/day",
            "organization": organization.pk,
            "agent": agent.pk,
            "limit_usd": "1",
            "period": "daily",
            "timezone": "UTC",
            "model_filter": "",
            "enforcement": "hard",
            "grace_percent": "0",
            "thresholds": "[50, 75, 90, 100]",
            "action": "block",
            "downgrade_model": "",
            "is_active": "on",
            "periods-TOTAL_FORMS": "0",
            "periods-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    budget = Budget.objects.get()
    assert (budget.agent, budget.limit_usd, budget.period) == (agent, Decimal(1), "daily")
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor, entry.budget) == (AuditAction.BUDGET_CREATED, operator, budget)
    page = staff_client.get(f"{CHANGELIST}{budget.pk}/change/").content.decode()
    assert "$0.4 spent + $0 reserved of $1 ($0.6 remaining)" in page
    assert "Reset current period" in page


def test_the_change_form_is_validated_by_budget_clean(staff_client, organization, project):
    response = staff_client.post(
        f"{CHANGELIST}add/",
        {
            "name": "bad",
            "organization": organization.pk,
            "project": project.pk,
            "limit_usd": "1",
            "period": "daily",
            "timezone": "UTC",
            "enforcement": "hard",
            "grace_percent": "0",
            "thresholds": "[50, 75, 90, 100]",
            "action": "pause_agent",
            "is_active": "on",
            "periods-TOTAL_FORMS": "0",
            "periods-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"action": ["Only an agent budget can pause its agent."]}
    assert not Budget.objects.exists() and not AuditEntry.objects.exists()


def test_changing_the_limit_in_the_admin_updates_the_live_period_and_audits(states, staff_client, operator):
    budget = states["exceeded"]
    period, _ = period_ensure(budget, period_bounds(budget, NOW))
    form = {
        "name": budget.name,
        "agent": budget.agent_id,
        "limit_usd": "20",
        "period": "daily",
        "timezone": "UTC",
        "model_filter": "",
        "enforcement": "hard",
        "grace_percent": "0",
        "thresholds": "[50, 75, 90, 100]",
        "action": "block",
        "downgrade_model": "",
        "is_active": "on",
        "periods-TOTAL_FORMS": "1",
        "periods-INITIAL_FORMS": "1",
        "periods-0-id": period.pk,
        "periods-0-budget": budget.pk,
    }

    response = staff_client.post(f"{CHANGELIST}{budget.pk}/change/", form)

    assert response.status_code == 302, response.context["adminform"].form.errors
    period.refresh_from_db()
    assert period.limit_nanos == 20_000_000_000
    entry = AuditEntry.objects.get(action=AuditAction.BUDGET_CHANGED)
    assert (entry.actor, entry.changes) == (operator, {"limit_usd": {"old": "9", "new": "20"}})


def test_deleting_in_the_admin_is_audited(states, staff_client, operator):
    budget = states["ok"]

    response = staff_client.post(f"{CHANGELIST}{budget.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Budget.objects.filter(pk=budget.pk).exists()
    assert AuditEntry.objects.get(action=AuditAction.BUDGET_DELETED).actor == operator


def test_reset_action_and_button_are_audited(states, staff_client, operator, agent):
    budget = states["exceeded"]
    period, _ = period_ensure(budget, period_bounds(budget, NOW))
    reservation = Reservation.objects.create(
        organization=budget.organization,
        agent=agent,
        model="gpt-4o",
        amount_nanos=400_000_000,
        expires_at=NOW + dt.timedelta(minutes=10),
    )
    ReservationHold.objects.create(reservation=reservation, period=period, amount_nanos=400_000_000)
    BudgetPeriod.objects.filter(pk=period.pk).update(
        reserved_nanos=F("reserved_nanos") + 400_000_000, spent_nanos=F("spent_nanos") + 1
    )

    response = staff_client.post(
        CHANGELIST, {"action": "reset_current_period", "_selected_action": [budget.pk]}, follow=True
    )

    assert response.status_code == 200
    assert "Reset the current period of 1 budget(s): released 1 held reservation(s)" in response.content.decode()
    period.refresh_from_db(), reservation.refresh_from_db()
    assert (period.spent_nanos, period.reserved_nanos, reservation.status) == (
        9_500_000_000,
        0,
        ReservationStatus.RELEASED,
    )
    assert AuditEntry.objects.get(action=AuditAction.PERIOD_RESET).actor == operator

    button = staff_client.post(reverse("admin:budgets_budget_reset_period", args=[budget.pk]), follow=True)
    assert button.status_code == 200
    assert "released 0 held reservation(s); spent $9.5 → $9.5, reserved $0 → $0." in button.content.decode()
    assert AuditEntry.objects.filter(action=AuditAction.PERIOD_RESET).count() == 2
    assert staff_client.get(reverse("admin:budgets_budget_reset_period", args=[budget.pk])).status_code == 405


def test_reservations_and_audit_entries_are_read_only(states, staff_client, agent):
    reservation = Reservation.objects.create(
        organization=agent.project.organization,
        agent=agent,
        model="gpt-4o",
        amount_nanos=1_500_000,
        status=ReservationStatus.SETTLED,
        expires_at=NOW,
    )

    listed = staff_client.get("/admin/budgets/reservation/?status=settled")
    audit = staff_client.get("/admin/budgets/auditentry/?action=budget_created")

    assert listed.status_code == 200
    assert [r.pk for r in listed.context["cl"].result_list] == [reservation.pk]
    assert "$0.0015" in listed.content.decode()
    assert audit.status_code == 200
    assert len(audit.context["cl"].result_list) == 3
    assert "limit_usd: — → 9" in audit.content.decode()
    assert staff_client.get("/admin/budgets/reservation/add/").status_code == 403
    assert staff_client.get("/admin/budgets/auditentry/add/").status_code == 403
    entry = AuditEntry.objects.first()
    assert staff_client.post(f"/admin/budgets/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.count() == 3


def test_agent_pause_and_resume_are_logged_with_who_and_when(staff_client, agent, operator):
    staff_client.post(reverse("admin:costs_agent_pause", args=[agent.pk]))
    staff_client.post("/admin/costs/agent/", {"action": "resume_agents", "_selected_action": [agent.pk]}, follow=True)
    # Already active: nothing changed, nothing logged.
    staff_client.post("/admin/costs/agent/", {"action": "resume_agents", "_selected_action": [agent.pk]})

    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.ACTIVE
    entries = [
        (e.user, e.action_flag, e.object_id, e.change_message, e.action_time) for e in LogEntry.objects.order_by("pk")
    ]
    assert entries == [
        (operator, CHANGE, str(agent.pk), "Paused the agent (status: paused).", NOW),
        (operator, CHANGE, str(agent.pk), "Resumed the agent (status: active).", NOW),
    ]
    history = staff_client.get(reverse("admin:costs_agent_history", args=[agent.pk])).content.decode()
    assert "Paused the agent (status: paused)." in history
