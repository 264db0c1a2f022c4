"""The server-rendered report pages: staff only, render with data, sortable tables, CSV links."""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from freezegun import freeze_time

from budgets.models import Budget
from tests.budgets.conftest import ledger_row, make_price
from tests.factories import AgentFactory, SprintFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db) -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_user("olivia", is_staff=True))
    return client


@pytest.fixture
def spend(organization, project, agent):
    make_price("gpt-4o", input="2.5", output="10")
    writer = AgentFactory(project=project, name="writer")
    today = timezone.now().astimezone(organization.tzinfo).date()
    sprint = SprintFactory(project=project, slug="s1", start_date=today - dt.timedelta(days=6), end_date=today)
    now = timezone.now() - dt.timedelta(minutes=5)
    for days in range(3):
        ledger_row(agent=agent, cost_usd="1.25", occurred_at=now - dt.timedelta(days=days), sprint=sprint)
    ledger_row(agent=writer, cost_usd="0.50", occurred_at=now, sprint=sprint)
    Budget.objects.create(
        organization=organization, project=project, name="search monthly", limit_usd=Decimal(10), period="monthly"
    )
    return sprint


def test_pages_are_for_staff_only(client, organization):
    response = client.get("/reports/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_overview_shows_spend_budgets_chart_and_top_tables(staff, spend):
    page = staff.get("/reports/?organization=acme")

    assert page.status_code == 200
    html = page.content.decode()
    assert "<h1>Acme</h1>" in html
    assert '<svg class="chart"' in html and 'class="bar"' in html
    assert '<svg class="gauge' in html and "search monthly" in html
    # Top agents, costliest first: planner $3.75 (3 x $1.25), writer $0.50.
    agents = html[html.index("Top agents") :]
    assert agents.index("planner") < agents.index("writer")
    assert "$3.75" in agents and "$0.50" in agents
    assert 'href="/api/v1/reports/breakdown/?organization=acme&amp;format=csv' in html
    assert 'href="/reports/acme/projects/search/agents/planner/"' in html


def test_tables_sort_on_the_server(staff, spend):
    page = staff.get("/reports/?organization=acme&agents_sort=cost_usd&agents_dir=asc").content.decode()

    agents = page[page.index("Top agents") :]
    assert agents.index("writer") < agents.index("planner")
    assert re.search(r'class="sorted asc">Cost</a>', agents)


def test_project_sprint_and_agent_pages(staff, spend):
    for url, title in [
        ("/reports/acme/projects/search/", "<h1>Project Search</h1>"),
        ("/reports/acme/projects/search/sprints/s1/", "<h1>Sprint "),
        ("/reports/acme/projects/search/agents/planner/", "<h1>Agent planner</h1>"),
    ]:
        page = staff.get(url)
        assert page.status_code == 200, url
        html = page.content.decode()
        assert title in html, url
        assert '<svg class="chart"' in html
    agent_page = staff.get("/reports/acme/projects/search/agents/planner/").content.decode()
    assert "$3.75" in agent_page and "writer" not in agent_page


def test_an_unknown_node_is_404(staff, spend):
    assert staff.get("/reports/acme/projects/nope/").status_code == 404
    assert staff.get("/reports/acme/projects/search/agents/nobody/").status_code == 404


@freeze_time("2026-11-20T12:00:00Z")
@pytest.mark.parametrize("query", ["", "&start=2026-11-01&end=2026-11-05"])
def test_the_months_forecast_is_month_to_date_plus_the_last_seven_days_rate(staff, organization, agent, query):
    """From the page's own daily trend when its range holds the last 7 days, else from the ledger:
    the same figure either way."""
    make_price("gpt-4o", input="2.5", output="10")
    for day, cost in [(2, "5.00"), (14, "3.50"), (20, "1.00")]:
        ledger_row(agent=agent, cost_usd=cost, occurred_at=dt.datetime(2026, 11, day, 10, tzinfo=dt.UTC))

    page = staff.get(f"/reports/?organization=acme{query}").content.decode()

    # Month to date $9.50; the last 7 days (from 14 Nov 00:00, 6.5 days ago) $4.50, so $4.50 / 6.5 days
    # for the 10.5 days left: 9.50 + 4.50 x 10.5 / 6.5 = $16.77.
    card = page[page.index("Forecast for the month") :]
    assert card.index("$16.77") < card.index("at the last 7 days")
