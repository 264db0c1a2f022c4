"""GET /api/v1/usage/ and /api/v1/usage/<id>/: the ledger as an API key may see it; append-only."""

import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction

from costs.models import UsageRecord
from costs.services.api_keys import api_key_create
from costs.services.ingest import usage_ingest
from tests.costs.test_ingest import URL, client_for, make_price, usage
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory, SprintFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger(organization, project, agent):
    """Rows in two projects and two agents of acme, and one row of another organization."""
    make_price("gpt-4o", input="2.5", output="10")
    support = ProjectFactory(organization=organization, slug="support")
    SprintFactory(project=project, slug="s1", start_date=dt.date(2026, 11, 1), end_date=dt.date(2026, 11, 14))
    org_key = client_for(organization=organization)
    records = [
        usage(request_id="a", project="search", agent="planner", occurred_at="2026-11-02T10:00:00Z"),
        usage(request_id="b", project="search", agent="planner", model="mystery", occurred_at="2026-11-03T10:00:00Z"),
        usage(request_id="c", project="search", agent="coder", status="error", occurred_at="2026-11-04T10:00:00Z"),
        usage(request_id="d", project="support", agent="triage", occurred_at="2026-10-20T10:00:00Z"),
    ]
    assert org_key.post(URL, {"records": records}, format="json").status_code == 201

    globex = OrganizationFactory(slug="globex")
    globex_project = ProjectFactory(organization=globex, slug="search")
    globex_agent = AgentFactory(project=globex_project, name="planner")
    foreign = client_for(organization=globex, project=globex_project, agent=globex_agent)
    assert foreign.post(URL, usage(request_id="a"), format="json").status_code == 201
    return {"org": org_key, "support": support, "globex": foreign}


def ids(response) -> list[str]:
    return [r["request_id"] for r in response.json()["results"]]


def test_list_shows_the_organization_newest_first_in_the_answer_shape(ledger):
    response = ledger["org"].get(URL)

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (4, None, None)
    assert ids(response) == ["c", "b", "a", "d"]
    created = ledger["org"].post(URL, usage(request_id="a", project="search", agent="planner"), format="json").json()
    listed = next(r for r in body["results"] if r["request_id"] == "a")
    assert listed == {k: v for k, v in created.items() if k != "replayed"}
    assert listed["sprint"] == "s1"
    assert listed["cost_usd"] == "0.00035"


def test_other_organizations_rows_are_invisible(ledger):
    foreign_row = UsageRecord.objects.get(organization__slug="globex")
    own_row = UsageRecord.objects.get(organization__slug="acme", request_id="a")

    assert ids(ledger["globex"].get(URL)) == ["a"]
    assert ledger["globex"].get(URL).json()["results"][0]["organization"] == "globex"
    assert ledger["org"].get(f"{URL}{foreign_row.pk}/").status_code == 404
    assert ledger["globex"].get(f"{URL}{own_row.pk}/").json() == {
        "error": {"code": "not_found", "message": "No usage record with this id.", "fields": {}}
    }


def test_detail_answers_one_row(ledger):
    row = UsageRecord.objects.get(organization__slug="acme", request_id="c")

    response = ledger["org"].get(f"{URL}{row.pk}/")

    assert response.status_code == 200
    assert (response.json()["id"], response.json()["agent"], response.json()["status"]) == (row.pk, "coder", "error")
    assert "replayed" not in response.json()


def test_project_and_agent_keys_see_only_their_part(ledger, organization, project, agent):
    project_key = client_for(organization=organization, project=ledger["support"])
    agent_key = client_for(organization=organization, project=project, agent=agent)
    coder_row = UsageRecord.objects.get(request_id="c", organization=organization)

    assert ids(project_key.get(URL)) == ["d"]
    assert ids(agent_key.get(URL)) == ["b", "a"]
    assert agent_key.get(f"{URL}{coder_row.pk}/").status_code == 404


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("cost_source=unpriced", ["b"]),
        ("cost_source=computed", ["c", "a", "d"]),
        ("status=error", ["c"]),
        ("project=support", ["d"]),
        ("agent=planner", ["b", "a"]),
        ("sprint=s1", ["c", "b", "a"]),
        ("model=mystery", ["b"]),
        ("occurred_after=2026-11-03T10:00:00Z", ["c", "b"]),
        ("occurred_before=2026-11-03T10:00:00Z", ["a", "d"]),
        ("occurred_after=2026-11-01T00:00:00Z&occurred_before=2026-11-04T00:00:00Z&agent=planner", ["b", "a"]),
    ],
)
def test_filters(ledger, query, expected):
    response = ledger["org"].get(f"{URL}?{query}")

    assert response.status_code == 200
    assert ids(response) == expected


def test_unpriced_rows_are_listed_with_a_null_cost(ledger):
    [row] = ledger["org"].get(f"{URL}?cost_source=unpriced").json()["results"]

    assert (row["model"], row["cost_usd"], row["cost_source"], row["price_id"]) == ("mystery", None, "unpriced", None)


def test_bad_filter_value_is_a_400(ledger):
    response = ledger["org"].get(f"{URL}?cost_source=free")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert list(response.json()["error"]["fields"]) == ["cost_source"]


def test_pagination(ledger):
    first = ledger["org"].get(f"{URL}?limit=3").json()
    second = ledger["org"].get(first["next"]).json()

    assert [r["request_id"] for r in first["results"]] == ["c", "b", "a"]
    assert [r["request_id"] for r in second["results"]] == ["d"]
    assert (first["count"], second["next"]) == (4, None)


# --- append-only ------------------------------------------------------------------------------


def _one_row(organization, project, agent) -> UsageRecord:
    key, _ = api_key_create(organization=organization, project=project, agent=agent, name="k")
    return usage_ingest(api_key=key, records=[usage(model="mystery")])[0].row


def test_the_orm_refuses_updates_and_deletes(organization, project, agent):
    row = _one_row(organization, project, agent)

    with pytest.raises(TypeError, match="append-only"):
        UsageRecord.objects.filter(pk=row.pk).update(prompt_tokens=1)
    with pytest.raises(TypeError, match="append-only"):
        UsageRecord.objects.get(pk=row.pk).save()
    with pytest.raises(TypeError, match="append-only"):
        row.delete()
    assert UsageRecord.objects.get(pk=row.pk).prompt_tokens == 100


@pytest.mark.postgres
@pytest.mark.parametrize(
    "statement", ["UPDATE costs_usagerecord SET prompt_tokens = 1", "DELETE FROM costs_usagerecord"]
)
def test_the_database_refuses_raw_updates_and_deletes(organization, project, agent, statement):
    row = _one_row(organization, project, agent)

    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)

    assert UsageRecord.objects.get(pk=row.pk).prompt_tokens == 100


def test_the_openapi_schema_describes_the_usage_api(api_client):
    schema = api_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    assert set(schema["paths"]["/api/v1/usage/"]) == {"get", "post"}
    post = schema["paths"]["/api/v1/usage/"]["post"]
    assert {"ApiKey": []} in post["security"]
    assert set(post["responses"]) == {"200", "201", "400", "401", "403"}
    one_of = schema["components"]["schemas"]["UsageIngestRequest"]["oneOf"]
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in one_of] == ["UsageInput", "UsageBatchInput"]
    assert "replayed" in schema["components"]["schemas"]["IngestedRecord"]["properties"]
