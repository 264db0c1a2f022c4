"""/api/v1/reports/...: whole JSON answers and CSV bodies, tenancy (keys within their scope, staff
by organization, another organization never shows), validation errors, the budget projections and
the local API docs page."""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from freezegun import freeze_time
from rest_framework.test import APIClient

from budgets.models import AlertKind, AlertSeverity, PeriodKind
from budgets.services.alerts import alert_record
from tests.budgets.conftest import make_budget
from tests.costs.test_analytics import ledger_row, rolled_until, rollup
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory, SprintFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/reports/"
NOW = dt.datetime(2026, 11, 20, 12, 30, tzinfo=dt.UTC)
NOVEMBER = {"start": "2026-11-01", "end": "2026-11-30"}


def zero(**overrides) -> dict:
    figures = {
        "requests": 0,
        "error_requests": 0,
        "unpriced_requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "cache_creation_tokens": 0,
        "reasoning_tokens": 0,
        "total_tokens": 0,
        "cost_usd": "0",
        "cost_per_request": None,
        "cost_per_1k_tokens": None,
    }
    figures.update(overrides)
    return figures


# Everything acme spent in November (the spend fixture).
NOVEMBER_TOTALS = zero(
    requests=8,
    error_requests=1,
    unpriced_requests=1,
    prompt_tokens=5500,
    completion_tokens=400,
    total_tokens=5900,
    cost_usd="4.25",
    cost_per_request="0.53125",
    cost_per_1k_tokens="0.720338983051",
)


@pytest.fixture
def spend(organization, project, agent):
    """acme: search (planner, coder) and support (triage), rolled and tail spend; globex spends too."""
    coder = AgentFactory(project=project, name="coder")
    triage = AgentFactory(project=ProjectFactory(organization=organization, slug="support"), name="triage")
    sprint = SprintFactory(project=project, slug="s1", start_date=dt.date(2026, 11, 1), end_date=dt.date(2026, 11, 14))
    rolled_until(organization)
    rollup(agent, day=dt.date(2026, 11, 2), cost="1.5", sprint=sprint, requests=3, prompt_tokens=3000)
    rollup(coder, day=dt.date(2026, 11, 3), cost="0.5", sprint=sprint, requests=1, prompt_tokens=500)
    rollup(triage, day=dt.date(2026, 11, 10), cost="2", model="claude-sonnet-4", provider="anthropic", requests=2)
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 20, 12, 10, tzinfo=dt.UTC), cost="0.25")  # the tail
    ledger_row(
        triage,
        occurred_at=dt.datetime(2026, 11, 20, 12, 20, tzinfo=dt.UTC),
        cost=None,
        model="mystery",
        provider="",
        status="error",
    )

    globex = OrganizationFactory(slug="globex")
    foreign = AgentFactory(project=ProjectFactory(organization=globex, slug="search"), name="planner")
    rollup(foreign, day=dt.date(2026, 11, 2), cost="70")
    ledger_row(foreign, occurred_at=dt.datetime(2026, 11, 20, 12, 10, tzinfo=dt.UTC), cost="90", model="mystery")
    return {"coder": coder, "triage": triage, "sprint": sprint, "globex": globex}


@pytest.fixture
def org_client(organization, authed_client):
    return authed_client(organization=organization)


@pytest.fixture
def staff_client():
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("olivia", is_staff=True))
    return client


def test_breakdown_by_project_and_model(spend, org_client):
    response = org_client.get(URL + "breakdown/", {**NOVEMBER, "group_by": "project,model"})

    assert response.status_code == 200
    assert response.json() == {
        "organization": "acme",
        "start": "2026-11-01",
        "end": "2026-11-30",
        "group_by": ["project", "model"],
        "count": 3,
        "next": None,
        "previous": None,
        "results": [
            {
                "project": "search",
                "model": "gpt-4o",
                **zero(
                    requests=5,
                    prompt_tokens=4500,
                    completion_tokens=200,
                    total_tokens=4700,
                    cost_usd="2.25",
                    cost_per_request="0.45",
                    cost_per_1k_tokens="0.478723404255",
                ),
            },
            {
                "project": "support",
                "model": "claude-sonnet-4",
                **zero(requests=2, cost_usd="2", cost_per_request="1"),
            },
            {
                "project": "support",
                "model": "mystery",
                **zero(
                    requests=1,
                    error_requests=1,
                    unpriced_requests=1,
                    prompt_tokens=1000,
                    completion_tokens=200,
                    total_tokens=1200,
                    cost_per_request="0",
                    cost_per_1k_tokens="0",
                ),
            },
        ],
    }


def test_breakdown_pages_and_csv_has_every_row(spend, org_client):
    page = org_client.get(URL + "breakdown/", {**NOVEMBER, "group_by": "agent", "limit": 1, "offset": 1}).json()
    assert (page["count"], [(r["project"], r["agent"]) for r in page["results"]]) == (3, [("search", "planner")])
    assert page["next"].endswith("?end=2026-11-30&group_by=agent&limit=1&offset=2&start=2026-11-01")

    response = org_client.get(URL + "breakdown/", {**NOVEMBER, "group_by": "agent,day", "format": "csv", "limit": 1})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="spendguard-breakdown-acme-2026-11-01-2026-11-30.csv"'
    )
    assert response.content.decode() == (
        "project,agent,day,requests,error_requests,unpriced_requests,prompt_tokens,completion_tokens,"
        "cached_tokens,cache_creation_tokens,reasoning_tokens,total_tokens,cost_usd,cost_per_request,"
        "cost_per_1k_tokens\r\n"
        "search,planner,2026-11-02,3,0,0,3000,0,0,0,0,3000,1.5,0.5,0.5\r\n"
        "search,coder,2026-11-03,1,0,0,500,0,0,0,0,500,0.5,0.5,1\r\n"
        "support,triage,2026-11-10,2,0,0,0,0,0,0,0,0,2,1,\r\n"
        "search,planner,2026-11-20,1,0,0,1000,200,0,0,0,1200,0.25,0.25,0.208333333333\r\n"
        "support,triage,2026-11-20,1,1,1,1000,200,0,0,0,1200,0,0,0\r\n"
    )
    by_accept = org_client.get(URL + "breakdown/", {**NOVEMBER, "group_by": "agent,day"}, HTTP_ACCEPT="text/csv")
    assert by_accept.content == response.content


def test_breakdown_by_sprint_and_tag(spend, organization, agent, org_client):
    by_sprint = org_client.get(URL + "breakdown/", {**NOVEMBER, "group_by": "sprint"}).json()["results"]
    assert [(r["project"], r["sprint"], r["cost_usd"]) for r in by_sprint] == [
        ("search", "s1", "2"),
        ("support", None, "2"),
        ("search", None, "0.25"),
    ]
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 5, tzinfo=dt.UTC), cost="3", tags={"team": "red"})
    by_tag = org_client.get(URL + "breakdown/", {**NOVEMBER, "group_by": "tag:team"}).json()["results"]
    # The tag path reads the ledger only: rolled spend without a ledger row here is not in it.
    assert [(r["tag:team"], r["cost_usd"]) for r in by_tag] == [("red", "3"), (None, "0.25")]


def test_totals_trend_and_top(spend, org_client):
    totals = org_client.get(URL + "totals/", NOVEMBER)
    assert totals.json() == {"organization": "acme", "start": "2026-11-01", "end": "2026-11-30", **NOVEMBER_TOTALS}

    trend = org_client.get(URL + "trend/", {"start": "2026-11-01", "end": "2026-11-18", "interval": "week"})
    assert trend.json() == {
        "organization": "acme",
        "start": "2026-11-01",
        "end": "2026-11-18",
        "interval": "week",
        "points": [
            {"period": "2026-10-26", **zero()},
            {
                "period": "2026-11-02",
                **zero(
                    requests=4,
                    prompt_tokens=3500,
                    total_tokens=3500,
                    cost_usd="2",
                    cost_per_request="0.5",
                    cost_per_1k_tokens="0.571428571429",
                ),
            },
            {"period": "2026-11-09", **zero(requests=2, cost_usd="2", cost_per_request="1")},
            {"period": "2026-11-16", **zero()},
        ],
    }
    csv = org_client.get(URL + "trend/", {"start": "2026-11-19", "end": "2026-11-20", "format": "csv"})
    assert csv.content.decode().splitlines() == [
        "period,requests,error_requests,unpriced_requests,prompt_tokens,completion_tokens,cached_tokens,"
        "cache_creation_tokens,reasoning_tokens,total_tokens,cost_usd,cost_per_request,cost_per_1k_tokens",
        "2026-11-19,0,0,0,0,0,0,0,0,0,0,,",
        "2026-11-20,2,1,1,2000,400,0,0,0,2400,0.25,0.125,0.104166666667",
    ]

    top = org_client.get(URL + "top/", {**NOVEMBER, "by": "agent", "limit": 2}).json()
    assert (top["by"], [(r["project"], r["agent"], r["cost_usd"]) for r in top["results"]]) == (
        "agent",
        [("support", "triage", "2"), ("search", "planner", "1.75")],
    )


def test_current_is_today_and_month_to_date_in_local_time(spend, organization, org_client):
    with freeze_time(NOW):
        body = org_client.get(URL + "current/").json()

    assert body == {
        "organization": "acme",
        "timezone": "UTC",
        "today": "2026-11-20",
        "month_start": "2026-11-01",
        "today_totals": zero(
            requests=2,
            error_requests=1,
            unpriced_requests=1,
            prompt_tokens=2000,
            completion_tokens=400,
            total_tokens=2400,
            cost_usd="0.25",
            cost_per_request="0.125",
            cost_per_1k_tokens="0.104166666667",
        ),
        "month_to_date": NOVEMBER_TOTALS,
    }


def test_unpriced_usage(spend, org_client):
    body = org_client.get(URL + "unpriced/", NOVEMBER).json()

    assert body == {
        "organization": "acme",
        "start": "2026-11-01",
        "end": "2026-11-30",
        "count": 1,
        "next": None,
        "previous": None,
        "results": [
            {
                "model": "mystery",
                "provider": "",
                "unpriced_requests": 1,
                "first_day": "2026-11-20",
                "last_day": "2026-11-20",
            }
        ],
    }


def test_default_range_is_the_last_30_local_days(spend, org_client):
    with freeze_time(NOW):
        body = org_client.get(URL + "totals/").json()

    assert (body["start"], body["end"], body["cost_usd"]) == ("2026-10-22", "2026-11-20", "4.25")


# --- tenancy ------------------------------------------------------------------------------------


def test_a_project_key_sees_only_its_project(spend, organization, project, authed_client):
    client = authed_client(organization=organization, project=project)

    by_project = client.get(URL + "breakdown/", {**NOVEMBER, "group_by": "project"}).json()["results"]
    assert [(r["project"], r["cost_usd"]) for r in by_project] == [("search", "2.25")]
    assert client.get(URL + "totals/", NOVEMBER).json()["cost_usd"] == "2.25"
    assert client.get(URL + "unpriced/", NOVEMBER).json()["results"] == []

    other = client.get(URL + "totals/", {**NOVEMBER, "project": "support"})
    assert other.status_code == 403
    assert other.json() == {
        "error": {"code": "out_of_scope", "message": "This API key may not read another project's spend.", "fields": {}}
    }


def test_an_agent_key_sees_only_its_agent(spend, organization, project, agent, authed_client):
    client = authed_client(organization=organization, project=project, agent=agent)

    assert client.get(URL + "totals/", NOVEMBER).json()["cost_usd"] == "1.75"
    assert client.get(URL + "totals/", {**NOVEMBER, "agent": "coder"}).status_code == 403
    assert client.get(URL + "totals/", {**NOVEMBER, "agent": "planner"}).json()["cost_usd"] == "1.75"


def test_filters_narrow_within_the_organization(spend, org_client):
    def cost(**params):
        return org_client.get(URL + "totals/", {**NOVEMBER, **params}).json()["cost_usd"]

    assert cost(project="search", agent="coder") == "0.5"
    assert cost(project="search", sprint="s1") == "2"
    assert cost(model="claude-sonnet-4") == "2"
    assert cost(provider="openai") == "2.25"
    assert cost(operation="embedding") == "0"


def test_another_organization_never_appears(spend, org_client, staff_client):
    assert org_client.get(URL + "breakdown/", {**NOVEMBER, "group_by": "org"}).json()["results"][0]["cost_usd"] == (
        "4.25"
    )
    foreign = org_client.get(URL + "totals/", {**NOVEMBER, "organization": "globex"})
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "out_of_scope"

    globex = staff_client.get(URL + "breakdown/", {**NOVEMBER, "organization": "globex", "group_by": "org"})
    assert [(r["org"], r["requests"], r["cost_usd"]) for r in globex.json()["results"]] == [("globex", 2, "160")]


def test_sessions_staff_name_the_organization_others_are_refused(spend, staff_client):
    missing = staff_client.get(URL + "totals/", NOVEMBER)
    assert missing.status_code == 400
    assert missing.json() == {
        "error": {
            "code": "validation_error",
            "message": "Some fields are invalid.",
            "fields": {"organization": ["Staff sessions name the organization (its slug)."]},
        }
    }
    assert staff_client.get(URL + "totals/", {**NOVEMBER, "organization": "acme"}).json()["cost_usd"] == "4.25"

    user = APIClient()
    user.force_login(get_user_model().objects.create_user("mallory"))
    refused = user.get(URL + "totals/", {**NOVEMBER, "organization": "acme"})
    assert refused.status_code == 403
    assert refused.json() == {
        "error": {
            "code": "operator_only",
            "message": "Only staff users may read reports with a session login.",
            "fields": {},
        }
    }
    anonymous = APIClient().get(URL + "totals/", {"format": "csv"})
    assert (anonymous.status_code, anonymous["Content-Type"]) == (401, "application/json")
    assert anonymous.json()["error"]["code"] == "not_authenticated"


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "fields"),
    [
        (
            "totals/",
            {"start": "2026-13-01"},
            {"start": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]},
        ),
        ("totals/", {"start": "2026-11-02", "end": "2026-11-01"}, {"end": ["Must not be before start."]}),
        ("trend/", {"start": "2025-01-01", "end": "2026-11-01"}, {"end": ["The range may span at most 366 days."]}),
        (
            "breakdown/",
            {"group_by": "project,colour"},
            {
                "group_by": [
                    "Unknown dimension 'colour'; choose from org, project, sprint, agent, model, provider, "
                    "operation, day, week, month or tag:<key>."
                ]
            },
        ),
        ("breakdown/", {"group_by": ","}, {"group_by": ["Name at least one dimension."]}),
        ("trend/", {"interval": "hour"}, {"interval": ['"hour" is not a valid choice.']}),
        (
            "top/",
            {"by": "sprint", "limit": "0"},
            {
                "by": ['"sprint" is not a valid choice.'],
                "limit": ["Ensure this value is greater than or equal to 1."],
            },
        ),
        ("totals/", {"project": "nope"}, {"project": ["No such project."]}),
        ("totals/", {"sprint": "s1"}, {"sprint": ["Name the project too (sprints are named per project)."]}),
        ("totals/", {"project": "search", "agent": "ghost"}, {"agent": ["No such agent in this project."]}),
        ("anomalies/", {"start": "2026-11-02", "end": "2026-11-01"}, {"end": ["Must not be before start."]}),
    ],
)
def test_bad_parameters_are_400_with_field_errors(spend, org_client, path, params, fields):
    response = org_client.get(URL + path, {**params, "format": "csv"})

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["fields"] == fields


# --- budgets and anomalies ----------------------------------------------------------------------


@pytest.fixture
def steady_budgets(organization, project, agent):
    """Search spends $1 a day Nov 1-13, then 2, 4, 2, 4, 2, 4 (Nov 14-19) and $1 this morning:
    $32 so far, $19 in the burn window (Nov 14 00:00 to now = 6.5 days)."""
    daily = [1] * 13 + [2, 4, 2, 4, 2, 4]
    for offset, usd in enumerate(daily):
        ledger_row(agent, occurred_at=dt.datetime(2026, 11, 1 + offset, 9, tzinfo=dt.UTC), cost=str(usd))
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 20, 6, tzinfo=dt.UTC), cost="1")
    return [
        make_budget(project=project, name="a search", limit_usd="100"),
        make_budget(project=project, name="b search tight", limit_usd="65"),
        make_budget(project=project, name="c search over", limit_usd="50"),
        make_budget(agent=agent, name="d planner", limit_usd="10"),
        make_budget(organization=organization, name="e lifetime", limit_usd="1000", period=PeriodKind.TOTAL),
    ]


def test_budget_projections_with_band_and_status(steady_budgets, org_client):
    with freeze_time(dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)):
        body = org_client.get(URL + "budgets/").json()

    # burn 19 / 6.5 days; projected 32 + 19 / 6.5 x 10.5 days left; complete days 2,4,2,4,2,4: sd = sqrt(1.2),
    # band ± 2 x sqrt(1.2) x sqrt(10.5) = ± 7.09929574.
    month = {"period": "monthly", "period_start": "2026-11-01T00:00:00Z", "period_end": "2026-12-01T00:00:00Z"}
    forecast = {
        "spent_usd": "32",
        "burn_rate_usd_per_day": "2.923076923",
        "projected_usd": "62.692307692",
        "projected_low_usd": "55.593011952",
        "projected_high_usd": "69.791603432",
    }
    ids = [b.pk for b in steady_budgets]
    node = {"scope": "project", "project": "search", "sprint": None, "agent": None, "model_filter": ""}
    assert body == {
        "organization": "acme",
        "count": 5,
        "next": None,
        "previous": None,
        "results": [
            {
                "id": ids[0],
                "name": "a search",
                **node,
                **month,
                "limit_usd": "100",
                **forecast,
                "projected_exhaustion_at": None,
                "status": "on_track",
            },
            {
                "id": ids[1],
                "name": "b search tight",
                **node,
                **month,
                "limit_usd": "65",
                **forecast,
                "projected_exhaustion_at": None,
                "status": "at_risk",
            },
            {
                "id": ids[2],
                "name": "c search over",
                **node,
                **month,
                "limit_usd": "50",
                **forecast,
                "projected_exhaustion_at": "2026-11-26T15:47:22.105264Z",
                "status": "forecast_over",
            },
            {
                "id": ids[3],
                "name": "d planner",
                **node,
                "scope": "agent",
                "agent": "planner",
                **month,
                "limit_usd": "10",
                **forecast,
                "projected_exhaustion_at": None,
                "status": "exceeded",
            },
            {
                "id": ids[4],
                "name": "e lifetime",
                "scope": "organization",
                "project": None,
                "sprint": None,
                "agent": None,
                "model_filter": "",
                "period": "total",
                "period_start": "2000-01-01T00:00:00Z",
                "period_end": None,
                "limit_usd": "1000",
                "spent_usd": "32",
                "burn_rate_usd_per_day": None,
                "projected_usd": None,
                "projected_low_usd": None,
                "projected_high_usd": None,
                "projected_exhaustion_at": None,
                "status": "no_forecast",
            },
        ],
    }


def test_budget_projections_read_rollups_and_tail_alike(steady_budgets, organization, org_client):
    from costs.services.rollups import rollups_refresh

    with freeze_time(dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)):
        before = org_client.get(URL + "budgets/", {"format": "csv"}).content
        rollups_refresh(until=dt.datetime(2026, 11, 20, 11, tzinfo=dt.UTC))  # everything above is rolled
        after = org_client.get(URL + "budgets/", {"format": "csv"}).content

    assert after == before
    assert (
        before.decode()
        .splitlines()[1]
        .endswith(
            ",a search,project,search,,,,monthly,2026-11-01 00:00:00+00:00,2026-12-01 00:00:00+00:00,100,32,"
            "2.923076923,62.692307692,55.593011952,69.791603432,,on_track"
        )
    )


def test_anomalies_within_scope(spend, organization, project, agent, authed_client):
    def anomaly(org, subject, fired_at):
        return alert_record(
            organization_id=org.pk,
            kind=AlertKind.ANOMALY,
            severity=AlertSeverity.WARNING,
            message=f"{subject.name} spent $12.40 in the last hour",
            spend_nanos=12_400_000_000,
            fired_at=fired_at,
            agent=subject,
            window="hour",
            window_start=fired_at.replace(minute=0),
            baseline_nanos=500_000_000,
            cutoff_nanos=2_000_000_000,
        )

    planner = anomaly(organization, agent, dt.datetime(2026, 11, 20, 9, 5, tzinfo=dt.UTC))
    anomaly(organization, spend["triage"], dt.datetime(2026, 11, 19, 9, 5, tzinfo=dt.UTC))
    anomaly(organization, agent, dt.datetime(2026, 10, 19, 9, 5, tzinfo=dt.UTC))  # before the range
    anomaly(spend["globex"], spend["globex"].projects.get().agents.get(), dt.datetime(2026, 11, 20, tzinfo=dt.UTC))

    body = authed_client(organization=organization, project=project).get(URL + "anomalies/", NOVEMBER).json()

    assert body == {
        "organization": "acme",
        "start": "2026-11-01",
        "end": "2026-11-30",
        "count": 1,
        "next": None,
        "previous": None,
        "results": [
            {
                "id": planner.pk,
                "fired_at": "2026-11-20T09:05:00Z",
                "project": "search",
                "agent": "planner",
                "window": "hour",
                "window_start": "2026-11-20T09:00:00Z",
                "spend_usd": "12.4",
                "baseline_usd": "0.5",
                "cutoff_usd": "2",
                "status": "open",
                "message": "planner spent $12.40 in the last hour",
            }
        ],
    }
    everyone = authed_client(organization=organization).get(URL + "anomalies/", NOVEMBER).json()
    assert [(r["project"], r["agent"]) for r in everyone["results"]] == [("search", "planner"), ("support", "triage")]


# --- schema and docs ----------------------------------------------------------------------------


def test_schema_describes_the_reports_and_docs_load_locally(api_client):
    schema = api_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    reports = sorted(path for path in schema["paths"] if path.startswith("/api/v1/reports/"))
    assert reports == [
        f"/api/v1/reports/{name}/"
        for name in ("anomalies", "breakdown", "budgets", "current", "top", "totals", "trend", "unpriced")
    ]
    breakdown = schema["paths"]["/api/v1/reports/breakdown/"]["get"]
    assert {p["name"] for p in breakdown["parameters"]} >= {"start", "end", "group_by", "project", "limit", "offset"}
    assert set(breakdown["responses"]["200"]["content"]) == {"application/json", "text/csv"}

    page = api_client.get("/api/v1/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r'"(/static/[^"]+)"', html)
    assert urls, html
    assert all(url.startswith("/static/") or url.startswith("/api/v1/") for url in urls), urls
    assets = [url for url in urls if url.startswith("/static/")]
    assert any(url.endswith("swagger-ui-bundle.js") for url in assets)
    for url in assets:
        assert finders.find(url.removeprefix("/static/")), url


def test_money_is_decimal_end_to_end(spend, organization, agent, org_client):
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 21, tzinfo=dt.UTC), cost="0.000000000001")
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 21, tzinfo=dt.UTC), cost="0.1")
    ledger_row(agent, occurred_at=dt.datetime(2026, 11, 21, tzinfo=dt.UTC), cost="0.2")

    body = org_client.get(URL + "totals/", {"start": "2026-11-21", "end": "2026-11-21"}).json()

    assert body["cost_usd"] == str(Decimal("0.300000000001"))


def test_the_timing_hook_calls_every_report(spend, organization, make_key):
    from costs.analytics_bench import REPORT_REQUESTS, reports_time

    _, secret = make_key(organization=organization)
    timings = reports_time(api_key=secret, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30), repeat=1)

    assert [(t.name, t.status) for t in timings] == [(name, 200) for name, _, _ in REPORT_REQUESTS]
