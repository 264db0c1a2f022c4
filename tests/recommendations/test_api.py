"""/api/v1/recommendations/: list (filters, paginated, best first) and read within an API key's
scope (staff everything); accept / reject / implement / verify for staff users, through HTTP with
whole answers and the database state behind them."""

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from freezegun import freeze_time
from rest_framework.test import APIClient

from recommendations.models import Confidence, Effort, Recommendation, RecommendationKind, RecommendationStatus
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory
from tests.recommendations.conftest import IN_WINDOW, NOW, ledger_row
from tests.recommendations.factories import RecommendationFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/recommendations/"
# When the operator acts (the recommendations were generated at NOW).
ACTED = NOW + dt.timedelta(hours=2)


@pytest.fixture
def staff_client():
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("olivia", is_staff=True))
    return client


@pytest.fixture
def recs(org, project, agent):
    """Four recommendations in acme (an agent's in project search, project search's own, an agent's
    in project support, the organization's) and one in globex; priorities 10, 12, 30, 5 and 20."""
    writer = AgentFactory(project=ProjectFactory(organization=org, slug="support"), name="writer")
    globex_agent = AgentFactory(project=ProjectFactory(organization=OrganizationFactory(slug="globex")), name="bot")
    return {
        "planner": RecommendationFactory(agent=agent, title="planner: gpt-4o → gpt-4o-mini"),
        "search": RecommendationFactory(
            agent=None,
            project=project,
            organization=org,
            kind=RecommendationKind.RESPONSE_CACHE,
            target="",
            title="search: cache repeated prompts",
            estimated_monthly_saving_usd=Decimal("40"),
            confidence=Confidence.MEDIUM,
            effort=Effort.MEDIUM,
            priority_score=Decimal("12"),
        ),
        "writer": RecommendationFactory(
            agent=writer,
            kind=RecommendationKind.BATCH_API,
            target="batch",
            title="writer: use the batch API",
            estimated_monthly_saving_usd=Decimal("30"),
            priority_score=Decimal("30"),
        ),
        "org": RecommendationFactory(
            agent=None,
            project=None,
            organization=org,
            kind=RecommendationKind.PROMPT_CACHE,
            title="acme: enable prompt caching",
            estimated_monthly_saving_usd=Decimal("5"),
            priority_score=Decimal("5"),
        ),
        "globex": RecommendationFactory(
            agent=globex_agent,
            title="globex: gpt-4o → gpt-4o-mini",
            estimated_monthly_saving_usd=Decimal("20"),
            priority_score=Decimal("20"),
        ),
    }


def expected(rec: Recommendation, **fields) -> dict:
    """The answer for a factory-made agent recommendation in acme, with ``fields`` changed."""
    body = {
        "id": rec.pk,
        "organization": "acme",
        "kind": "cheaper_model",
        "scope": "agent",
        "project": "search",
        "agent": "planner",
        "operation": "chat",
        "model": "gpt-4o",
        "provider": "openai",
        "target": "gpt-4o-mini",
        "title": rec.title,
        "explanation": "gpt-4o-mini does this agent's work for a fraction of gpt-4o's price.",
        "evidence": {"requests": 1000, "current_cost_usd": "12.5", "candidate_cost_usd": "2.5", "vetted": True},
        "window_start": "2026-10-31T12:00:00Z",
        "window_end": "2026-11-30T12:00:00Z",
        "baseline_requests": 1000,
        "baseline_cost_usd": "12.5",
        "estimated_monthly_saving_usd": "10",
        "confidence": "high",
        "effort": "low",
        "priority_score": "10",
        "status": "open",
        "status_reason": None,
        "status_changed_at": None,
        "status_changed_by": None,
        "implemented_at": None,
        "realized_monthly_saving_usd": None,
        "realized_measured_at": None,
        "realized_evidence": None,
        "created_at": "2026-11-30T12:00:00Z",
        "refreshed_at": "2026-11-30T12:00:00Z",
    }
    body.update(fields)
    return body


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


def status_of(rec: Recommendation) -> tuple:
    rec.refresh_from_db()
    return rec.status, rec.status_reason, rec.implemented_at


# --- reading --------------------------------------------------------------------------------------


def test_the_list_answers_one_recommendation_whole(staff_client, agent):
    rec = RecommendationFactory(agent=agent, title="planner: gpt-4o → gpt-4o-mini")

    response = staff_client.get(URL)

    assert response.status_code == 200
    assert response.json() == {"count": 1, "next": None, "previous": None, "results": [expected(rec)]}


def test_staff_see_every_organization_highest_priority_first(staff_client, recs):
    assert ids(staff_client.get(URL)) == [
        recs["writer"].pk,  # 30
        recs["globex"].pk,  # 20
        recs["search"].pk,  # 12
        recs["planner"].pk,  # 10
        recs["org"].pk,  # 5
    ]


def test_equal_priorities_rank_the_larger_saving_first(staff_client, agent):
    small = RecommendationFactory(agent=agent, estimated_monthly_saving_usd=Decimal("10"), priority_score=Decimal(6))
    large = RecommendationFactory(agent=agent, estimated_monthly_saving_usd=Decimal("20"), priority_score=Decimal(6))

    assert ids(staff_client.get(URL)) == [large.pk, small.pk]


def test_the_detail_answers_the_recommendation_and_scopes_show_in_it(staff_client, recs):
    planner = staff_client.get(f"{URL}{recs['planner'].pk}/")
    project_scoped = staff_client.get(f"{URL}{recs['search'].pk}/").json()
    org_scoped = staff_client.get(f"{URL}{recs['org'].pk}/").json()

    assert planner.status_code == 200
    assert planner.json() == expected(recs["planner"])
    assert (project_scoped["scope"], project_scoped["project"], project_scoped["agent"]) == ("project", "search", None)
    assert project_scoped["target"] is None  # "" is shown as null
    assert (org_scoped["scope"], org_scoped["project"], org_scoped["agent"]) == ("organization", None, None)


def test_filters(staff_client, recs):
    recs["search"].status = RecommendationStatus.ACCEPTED
    recs["search"].save()

    def listed(query: str) -> list[int]:
        return ids(staff_client.get(f"{URL}?{query}"))

    assert listed("kind=batch_api") == [recs["writer"].pk]
    assert listed("status=accepted") == [recs["search"].pk]
    assert listed("status=open&kind=cheaper_model") == [recs["globex"].pk, recs["planner"].pk]
    # An agent's recommendation belongs to its project too.
    assert listed("project=search") == [recs["search"].pk, recs["planner"].pk]
    assert listed("agent=planner") == [recs["planner"].pk]
    assert listed("organization=globex") == [recs["globex"].pk]
    assert listed("min_saving_usd=30") == [recs["writer"].pk, recs["search"].pk]
    assert listed("min_saving_usd=20.5&organization=acme") == [recs["writer"].pk, recs["search"].pk]
    assert listed("confidence=medium") == [recs["search"].pk]
    assert listed("project=nope") == []


def test_a_bad_filter_value_is_a_400_naming_the_field(staff_client, recs):
    kind = staff_client.get(f"{URL}?kind=nope")
    saving = staff_client.get(f"{URL}?min_saving_usd=lots&status=open")

    assert kind.status_code == saving.status_code == 400
    assert kind.json() == {
        "error": {
            "code": "validation_error",
            "message": "Some fields are invalid.",
            "fields": {"kind": ["Select a valid choice. nope is not one of the available choices."]},
        }
    }
    assert saving.json() == {
        "error": {
            "code": "validation_error",
            "message": "Some fields are invalid.",
            "fields": {"min_saving_usd": ["Enter a number."]},
        }
    }


def test_pagination_is_limit_offset(staff_client, recs):
    first = staff_client.get(f"{URL}?limit=2").json()
    second = staff_client.get(first["next"]).json()
    last = staff_client.get(second["next"]).json()

    assert (first["count"], first["previous"]) == (5, None)
    assert first["next"] == "http://testserver/api/v1/recommendations/?limit=2&offset=2"
    assert [item["id"] for item in first["results"] + second["results"] + last["results"]] == [
        recs[name].pk for name in ("writer", "globex", "search", "planner", "org")
    ]
    assert second["previous"] == "http://testserver/api/v1/recommendations/?limit=2"
    assert last["next"] is None


def test_an_organization_key_sees_its_organization_only(authed_client, recs, org):
    client = authed_client(organization=org)

    foreign = client.get(f"{URL}{recs['globex'].pk}/")

    assert ids(client.get(URL)) == [recs[name].pk for name in ("writer", "search", "planner", "org")]
    assert ids(client.get(f"{URL}?organization=globex")) == []
    assert client.get(f"{URL}{recs['planner'].pk}/").json() == expected(recs["planner"])
    assert foreign.status_code == 404
    assert foreign.json() == {"error": {"code": "not_found", "message": "No such recommendation.", "fields": {}}}


def test_a_project_key_sees_its_projects_only(authed_client, recs, org, project):
    client = authed_client(organization=org, project=project)

    assert ids(client.get(URL)) == [recs["search"].pk, recs["planner"].pk]
    for outside in ("writer", "org", "globex"):
        assert client.get(f"{URL}{recs[outside].pk}/").status_code == 404, outside


def test_an_agent_key_sees_its_agents_only(authed_client, recs, org, project, agent):
    client = authed_client(organization=org, project=project, agent=agent)

    assert ids(client.get(URL)) == [recs["planner"].pk]
    assert client.get(f"{URL}{recs['planner'].pk}/").status_code == 200
    for outside in ("search", "writer", "org", "globex"):
        assert client.get(f"{URL}{recs[outside].pk}/").status_code == 404, outside


def test_an_unknown_id_is_a_404(staff_client, recs):
    response = staff_client.get(f"{URL}999999/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_anonymous_callers_are_401_and_non_staff_sessions_403(recs):
    anonymous = APIClient()
    user = APIClient()
    user.force_login(get_user_model().objects.create_user("dave"))

    for response in (anonymous.get(URL), anonymous.post(f"{URL}{recs['planner'].pk}/accept/")):
        assert response.status_code == 401
        assert response.json() == {
            "error": {
                "code": "not_authenticated",
                "message": "Authentication credentials were not provided.",
                "fields": {},
            }
        }
    for response in (user.get(URL), user.post(f"{URL}{recs['planner'].pk}/accept/")):
        assert response.status_code == 403
        assert response.json() == {
            "error": {
                "code": "operator_only",
                "message": "Only staff users may use the recommendations API with a session login.",
                "fields": {},
            }
        }
    assert status_of(recs["planner"]) == ("open", "", None)


# --- acting (staff) -------------------------------------------------------------------------------


def test_accept_then_accept_again_is_a_no_op(staff_client, recs):
    rec = recs["planner"]
    with freeze_time(ACTED):
        accepted = staff_client.post(f"{URL}{rec.pk}/accept/")
    with freeze_time(ACTED + dt.timedelta(hours=1)):
        again = staff_client.post(f"{URL}{rec.pk}/accept/")

    assert accepted.status_code == again.status_code == 200
    want = expected(rec, status="accepted", status_changed_at="2026-11-30T14:00:00Z", status_changed_by="olivia")
    assert accepted.json() == want
    assert again.json() == want
    rec.refresh_from_db()
    assert (rec.status, rec.status_changed_at, rec.status_changed_by.username) == ("accepted", ACTED, "olivia")


def test_reject_requires_a_reason(staff_client, recs):
    rec = recs["planner"]

    missing = staff_client.post(f"{URL}{rec.pk}/reject/", {}, format="json")
    blank = staff_client.post(f"{URL}{rec.pk}/reject/", {"reason": "   "}, format="json")
    with freeze_time(ACTED):
        rejected = staff_client.post(
            f"{URL}{rec.pk}/reject/", {"reason": "Quality drops on long plans."}, format="json"
        )

    assert missing.status_code == blank.status_code == 400
    assert missing.json() == {
        "error": {
            "code": "validation_error",
            "message": "Some fields are invalid.",
            "fields": {"reason": ["This field is required."]},
        }
    }
    assert blank.json()["error"]["fields"] == {"reason": ["This field may not be blank."]}
    assert rejected.status_code == 200
    assert rejected.json() == expected(
        rec,
        status="rejected",
        status_reason="Quality drops on long plans.",
        status_changed_at="2026-11-30T14:00:00Z",
        status_changed_by="olivia",
    )
    assert status_of(rec) == ("rejected", "Quality drops on long plans.", None)


def test_a_refused_reject_writes_nothing(staff_client, recs):
    rec = recs["planner"]

    staff_client.post(f"{URL}{rec.pk}/reject/", {"reason": ""}, format="json")

    rec.refresh_from_db()
    assert (rec.status, rec.status_reason, rec.status_changed_at, rec.status_changed_by) == ("open", "", None, None)


def test_implement_now_or_at_a_given_time(staff_client, recs):
    with freeze_time(ACTED):
        now = staff_client.post(f"{URL}{recs['planner'].pk}/implement/")
        earlier = staff_client.post(
            f"{URL}{recs['writer'].pk}/implement/", {"implemented_at": "2026-11-29T08:00:00Z"}, format="json"
        )

    assert now.status_code == earlier.status_code == 200
    assert now.json() == expected(
        recs["planner"],
        status="implemented",
        status_changed_at="2026-11-30T14:00:00Z",
        status_changed_by="olivia",
        implemented_at="2026-11-30T14:00:00Z",
    )
    assert (earlier.json()["status"], earlier.json()["implemented_at"]) == ("implemented", "2026-11-29T08:00:00Z")
    assert status_of(recs["planner"]) == ("implemented", "", ACTED)
    assert status_of(recs["writer"]) == ("implemented", "", dt.datetime(2026, 11, 29, 8, tzinfo=dt.UTC))


def test_implemented_at_in_the_future_is_a_400(staff_client, recs):
    rec = recs["planner"]
    with freeze_time(ACTED):
        future = staff_client.post(
            f"{URL}{rec.pk}/implement/", {"implemented_at": "2026-11-30T14:01:00Z"}, format="json"
        )
        garbled = staff_client.post(f"{URL}{rec.pk}/implement/", {"implemented_at": "yesterday"}, format="json")

    assert future.status_code == garbled.status_code == 400
    assert future.json() == {
        "error": {
            "code": "validation_error",
            "message": "implemented_at cannot be in the future.",
            "fields": {"implemented_at": ["Must not be in the future."]},
        }
    }
    assert list(garbled.json()["error"]["fields"]) == ["implemented_at"]
    assert status_of(rec) == ("open", "", None)


def test_an_impossible_move_is_a_409(staff_client, recs):
    rec = recs["planner"]
    staff_client.post(f"{URL}{rec.pk}/reject/", {"reason": "No."}, format="json")

    accept = staff_client.post(f"{URL}{rec.pk}/accept/")
    implement = staff_client.post(f"{URL}{rec.pk}/implement/")

    assert accept.status_code == implement.status_code == 409
    assert accept.json() == {
        "error": {
            "code": "invalid_transition",
            "message": "A recommendation that is rejected cannot be marked accepted.",
            "fields": {},
            "status": "rejected",
        }
    }
    assert implement.json()["error"]["code"] == "invalid_transition"
    assert status_of(rec) == ("rejected", "No.", None)


def test_verify_needs_an_implemented_recommendation(staff_client, recs):
    response = staff_client.post(f"{URL}{recs['planner'].pk}/verify/")

    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": "not_measurable",
            "message": "Only an implemented recommendation has realized savings.",
            "fields": {},
            "status": "open",
        }
    }


def test_verify_needs_a_day_of_traffic_since_implementation(staff_client, recs):
    rec = recs["planner"]
    with freeze_time(ACTED):
        staff_client.post(f"{URL}{rec.pk}/implement/")
        response = staff_client.post(f"{URL}{rec.pk}/verify/")

    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": "not_measurable",
            "message": "Realized savings are measured after 1 day(s) of traffic since implementation.",
            "fields": {},
            "measurable_from": "2026-12-01T14:00:00+00:00",
        }
    }
    rec.refresh_from_db()
    assert (rec.realized_monthly_saving_usd, rec.realized_measured_at) == (None, None)


def test_verify_measures_the_realized_saving_from_the_ledger(staff_client, org, project, agent):
    """Baseline: 100 gpt-4o requests at $0.01 in the window. After implementation (at NOW): 50
    gpt-4o-mini requests at $0.004 in 10 days. (0.01 - 0.004) x 50 x 30 / 10 = $0.90 a month."""
    rec = RecommendationFactory(agent=agent, title="planner: gpt-4o → gpt-4o-mini")
    for _ in range(100):
        ledger_row(agent, cost="0.01", occurred_at=IN_WINDOW)
    for day in range(50):
        ledger_row(agent, cost="0.004", model="gpt-4o-mini", occurred_at=NOW + dt.timedelta(hours=4 * day + 1))
    # Not this traffic: before the window, another agent, another operation.
    ledger_row(agent, cost="5", occurred_at=NOW - dt.timedelta(days=31))
    ledger_row(AgentFactory(project=project, name="writer"), cost="5", occurred_at=IN_WINDOW)
    ledger_row(agent, cost="5", model="gpt-4o-mini", operation="embedding", occurred_at=NOW + dt.timedelta(days=1))
    with freeze_time(ACTED):
        staff_client.post(f"{URL}{rec.pk}/implement/", {"implemented_at": "2026-11-30T12:00:00Z"}, format="json")

    with freeze_time(NOW + dt.timedelta(days=10)):
        response = staff_client.post(f"{URL}{rec.pk}/verify/")

    assert response.status_code == 200
    assert response.json() == expected(
        rec,
        status="implemented",
        status_changed_at="2026-11-30T14:00:00Z",
        status_changed_by="olivia",
        implemented_at="2026-11-30T12:00:00Z",
        realized_monthly_saving_usd="0.9",
        realized_measured_at="2026-12-10T12:00:00Z",
        realized_evidence={
            "method": "per_request",
            "baseline": {
                "start": "2026-10-31T12:00:00+00:00",
                "end": "2026-11-30T12:00:00+00:00",
                "requests": 100,
                "cost_usd": "1",
                "days": "30",
            },
            "after": {
                "start": "2026-11-30T12:00:00+00:00",
                "end": "2026-12-10T12:00:00+00:00",
                "requests": 50,
                "cost_usd": "0.2",
                "days": "10",
            },
            "estimated_monthly_saving_usd": "10",
            "realized_monthly_saving_usd": "0.9",
        },
    )
    rec.refresh_from_db()
    assert rec.realized_monthly_saving_usd == Decimal("0.9")
    assert rec.realized_measured_at == NOW + dt.timedelta(days=10)


def test_api_keys_cannot_act(authed_client, recs, org):
    client = authed_client(organization=org)
    rec = recs["planner"]

    for action, body in [("accept", {}), ("reject", {"reason": "no"}), ("implement", {}), ("verify", {})]:
        response = client.post(f"{URL}{rec.pk}/{action}/", body, format="json")
        assert response.status_code == 403, action
        assert response.json() == {
            "error": {
                "code": "operator_only",
                "message": "API keys may only read recommendations; operators act on them.",
                "fields": {},
            }
        }, action

    rec.refresh_from_db()
    assert (rec.status, rec.status_reason, rec.status_changed_at, rec.implemented_at) == ("open", "", None, None)


def test_staff_act_on_any_organizations_and_unknown_ids_are_404(staff_client, recs):
    foreign = staff_client.post(f"{URL}{recs['globex'].pk}/accept/")
    missing = staff_client.post(f"{URL}999999/reject/", {"reason": "gone"}, format="json")

    assert (foreign.status_code, foreign.json()["organization"], foreign.json()["status"]) == (
        200,
        recs["globex"].organization.slug,
        "accepted",
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_the_schema_describes_the_recommendations_api(staff_client):
    schema = staff_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    assert {
        "/api/v1/recommendations/",
        "/api/v1/recommendations/{id}/",
        "/api/v1/recommendations/{id}/accept/",
        "/api/v1/recommendations/{id}/reject/",
        "/api/v1/recommendations/{id}/implement/",
        "/api/v1/recommendations/{id}/verify/",
    } <= set(schema["paths"])
