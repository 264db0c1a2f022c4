"""/api/v1/alerts/: list and read (API keys within their scope, staff everything), acknowledge and
resolve (staff), through HTTP with whole answers."""

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from budgets.models import AlertKind, AlertSeverity, BudgetAlert, BudgetPeriod
from budgets.services.alerts import alert_record
from tests.budgets.conftest import make_budget
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/alerts/"
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
FIRED = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def staff_client():
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("olivia", is_staff=True))
    return client


def threshold_alert(budget, threshold: int, *, fired_at=FIRED) -> BudgetAlert:
    period = BudgetPeriod.objects.get_or_create(
        budget=budget,
        starts_at=START,
        defaults={"ends_at": dt.datetime(2026, 12, 1, tzinfo=dt.UTC), "limit_nanos": 10**10, "ceiling_nanos": 10**10},
    )[0]
    return alert_record(
        organization_id=budget.organization_id,
        kind=AlertKind.THRESHOLD,
        severity=AlertSeverity.WARNING,
        message=f"{budget.name} reached {threshold}%",
        spend_nanos=9 * 10**9,
        fired_at=fired_at,
        budget=budget,
        period=period,
        threshold_percent=threshold,
        limit_nanos=10**10,
    )


@pytest.fixture
def alerts(organization, project, agent):
    other = AgentFactory(project=ProjectFactory(organization=organization, slug="support"), name="helper")
    made = {
        "search": threshold_alert(make_budget(project=project, name="search", limit_usd="10"), 90),
        "support": threshold_alert(
            make_budget(agent=other, name="helper", limit_usd="10"), 75, fired_at=FIRED - dt.timedelta(hours=1)
        ),
        "anomaly": alert_record(
            organization_id=organization.pk,
            kind=AlertKind.ANOMALY,
            severity=AlertSeverity.WARNING,
            message="planner spent $12.40 in the last hour",
            spend_nanos=12_400_000_000,
            fired_at=FIRED + dt.timedelta(minutes=5),
            agent=agent,
            window="hour",
            window_start=dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC),
            baseline_nanos=500_000_000,
            cutoff_nanos=2_000_000_000,
        ),
    }
    globex = OrganizationFactory(slug="globex")
    made["globex"] = threshold_alert(
        make_budget(organization=globex, name="globex", limit_usd="10"), 50, fired_at=FIRED - dt.timedelta(days=1)
    )
    return made


def expected(alert: BudgetAlert, **fields) -> dict:
    body = {
        "id": alert.pk,
        "organization": "acme",
        "kind": "threshold",
        "severity": "warning",
        "message": alert.message,
        "budget": alert.budget_id,
        "period_start": "2026-11-01T00:00:00Z",
        "period_end": "2026-12-01T00:00:00Z",
        "threshold_percent": alert.threshold_percent,
        "spend_usd": "9",
        "limit_usd": "10",
        "projected_usd": None,
        "projected_exhaustion_at": None,
        "project": None,
        "agent": None,
        "window": None,
        "window_start": None,
        "baseline_usd": None,
        "cutoff_usd": None,
        "fired_at": "2026-11-20T09:30:00Z",
        "status": "open",
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "deliveries": [],
    }
    body.update(fields)
    return body


ANOMALY = {
    "kind": "anomaly",
    "budget": None,
    "period_start": None,
    "period_end": None,
    "threshold_percent": None,
    "spend_usd": "12.4",
    "limit_usd": None,
    "agent": "planner",
    "window": "hour",
    "window_start": "2026-11-20T09:00:00Z",
    "baseline_usd": "0.5",
    "cutoff_usd": "2",
    "fired_at": "2026-11-20T09:35:00Z",
}


def test_staff_list_every_alert_newest_first(staff_client, alerts):
    response = staff_client.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 4
    assert [item["id"] for item in body["results"]] == [
        alerts["anomaly"].pk,
        alerts["search"].pk,
        alerts["support"].pk,
        alerts["globex"].pk,
    ]
    assert body["results"][0] == expected(alerts["anomaly"], **ANOMALY)
    assert body["results"][1] == expected(alerts["search"])


def test_an_api_key_sees_its_scope_only(authed_client, alerts, organization, project, agent):
    project_key = authed_client(organization=organization, project=project)
    org_key = authed_client(organization=organization)

    seen = [item["id"] for item in project_key.get(URL).json()["results"]]
    foreign = project_key.get(f"{URL}{alerts['globex'].pk}/")

    assert seen == [alerts["anomaly"].pk, alerts["search"].pk]
    assert len(org_key.get(URL).json()["results"]) == 3
    assert foreign.status_code == 404
    assert foreign.json() == {"error": {"code": "not_found", "message": "No such alert.", "fields": {}}}


def test_filters(staff_client, alerts):
    def ids(query: str) -> list[int]:
        return [item["id"] for item in staff_client.get(f"{URL}?{query}").json()["results"]]

    assert ids("kind=anomaly") == [alerts["anomaly"].pk]
    assert ids("organization=globex") == [alerts["globex"].pk]
    assert ids(f"budget={alerts['search'].budget_id}") == [alerts["search"].pk]
    assert ids("fired_before=2026-11-20T00:00:00Z") == [alerts["globex"].pk]
    bad = staff_client.get(f"{URL}?kind=nope")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "validation_error"
    assert list(bad.json()["error"]["fields"]) == ["kind"]


def test_staff_acknowledge_then_resolve_and_the_alert_stays_listed(staff_client, alerts):
    alert = alerts["search"]

    acknowledged = staff_client.post(f"{URL}{alert.pk}/acknowledge/")
    again = staff_client.post(f"{URL}{alert.pk}/acknowledge/")
    resolved = staff_client.post(f"{URL}{alert.pk}/resolve/")

    assert acknowledged.status_code == again.status_code == resolved.status_code == 200
    ack = acknowledged.json()
    assert (ack["status"], ack["acknowledged_by"]) == ("acknowledged", "olivia")
    assert again.json()["acknowledged_at"] == ack["acknowledged_at"]
    done = resolved.json()
    assert (done["status"], done["acknowledged_by"], done["resolved_by"]) == ("resolved", "olivia", "olivia")
    assert done["resolved_at"] is not None
    listed = staff_client.get(f"{URL}?status=resolved").json()["results"]
    assert [item["id"] for item in listed] == [alert.pk]


def test_api_keys_cannot_acknowledge(authed_client, alerts, organization):
    client = authed_client(organization=organization)

    response = client.post(f"{URL}{alerts['search'].pk}/acknowledge/")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "operator_only"
    assert BudgetAlert.objects.get(pk=alerts["search"].pk).status == "open"


def test_the_schema_describes_the_alerts_api(staff_client):
    schema = staff_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    assert {"/api/v1/alerts/", "/api/v1/alerts/{id}/", "/api/v1/alerts/{id}/acknowledge/"} <= set(schema["paths"])
    output = schema["components"]["schemas"]["AlertOutput"]["properties"]
    assert {"kind", "severity", "spend_usd", "status", "acknowledged_by", "deliveries"} <= set(output)


def test_limit_money_is_a_decimal_string(staff_client, alerts):
    assert all(isinstance(item["spend_usd"], str) for item in staff_client.get(URL).json()["results"])
    assert Decimal(staff_client.get(URL).json()["results"][0]["spend_usd"]) == Decimal("12.4")
