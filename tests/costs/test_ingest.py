"""POST /api/v1/usage/ over HTTP: costs, order, idempotency, attribution, validation, scope.

Prices are created here with hand-picked rates (USD per 1M tokens) so every expected cost is
worked out by hand, to the last digit.
"""

import datetime as dt
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from costs.models import Agent, Operation, UsageRecord
from costs.services.api_keys import api_key_create
from pricing.models import ModelPrice, PriceSource
from tests.factories import AgentFactory, OrganizationFactory, ProjectFactory, SprintFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/usage/"
SINCE_2000 = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def make_price(model: str, *, provider: str = "", effective_from=SINCE_2000, effective_to=None, **rates) -> ModelPrice:
    return ModelPrice.objects.create(
        model=model,
        provider=provider,
        source=PriceSource.MANUAL,
        effective_from=effective_from,
        effective_to=effective_to,
        **{f"{kind}_usd_per_mtok": Decimal(rate) for kind, rate in rates.items()},
    )


@pytest.fixture
def prices(db) -> dict[str, ModelPrice]:
    return {
        "gpt-4o": make_price("gpt-4o", provider="openai", input="2.5", output="10", cache_read="1.25"),
        "claude": make_price(
            "claude-3-5-sonnet-20241022",
            provider="anthropic",
            input="3",
            output="15",
            cache_read="0.3",
            cache_write="3.75",
        ),
        "o3-mini": make_price("o3-mini", provider="openai", input="1.1", output="4.4", cache_read="0.55"),
        "thinker": make_price("deep-thinker", input="2", output="8", reasoning="20"),
        "tiny": make_price("tiny-embed", input="0.123456789", output="0"),
    }


def client_for(*, organization, project=None, agent=None) -> APIClient:
    _, secret = api_key_create(organization=organization, project=project, agent=agent, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def agent_client(organization, project, agent) -> APIClient:
    return client_for(organization=organization, project=project, agent=agent)


@pytest.fixture
def project_client(organization, project) -> APIClient:
    return client_for(organization=organization, project=project)


@pytest.fixture
def org_client(organization) -> APIClient:
    return client_for(organization=organization)


def usage(**fields) -> dict:
    record = {
        "request_id": "req-1",
        "model": "gpt-4o",
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "occurred_at": "2026-11-02T10:00:00Z",
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not ...}


def expected(row: UsageRecord, **fields) -> dict:
    """A full answer record; ``fields`` override the defaults of :func:`usage`."""
    body = {
        "id": row.pk,
        "request_id": "req-1",
        "replayed": False,
        "organization": "acme",
        "project": "search",
        "sprint": None,
        "agent": "planner",
        "model": "gpt-4o",
        "provider": "",
        "operation": "chat",
        "status": "success",
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "cached_tokens": 0,
        "cache_creation_tokens": 0,
        "reasoning_tokens": 0,
        "batch": False,
        "occurred_at": "2026-11-02T10:00:00Z",
        "cost_usd": None,
        "cost_source": "unpriced",
        "input_cost_usd": None,
        "cached_input_cost_usd": None,
        "cache_creation_cost_usd": None,
        "output_cost_usd": None,
        "computed_cost_usd": None,
        "provider_cost_usd": None,
        "price_id": None,
        "reservation_id": None,
        "tags": {},
        "latency_ms": None,
        "end_user": "",
        "prompt_hash": "",
    }
    assert set(fields) <= set(body), set(fields) - set(body)
    body.update(fields)
    return body


# --- costs ------------------------------------------------------------------------------------


def test_single_record_is_costed_exactly_and_stored(agent_client, prices):
    response = agent_client.post(
        URL,
        usage(
            provider="openai",
            prompt_tokens=1234,
            cached_tokens=200,
            completion_tokens=567,
            tags={"feature": "search", "retry": 0, "beta": True, "score": 0.5},
            latency_ms=850,
            end_user="user-42",
            prompt_hash="abc123",
            reservation_id="0b5e8a4c-2f1e-4d3b-9a57-6f1c2d3e4f50",
        ),
        format="json",
    )

    assert response.status_code == 201, response.json()
    row = UsageRecord.objects.get()
    # input 1034 x 2.5 + cached 200 x 1.25 + output 567 x 10, per 1M tokens
    assert response.json() == expected(
        row,
        provider="openai",
        prompt_tokens=1234,
        cached_tokens=200,
        completion_tokens=567,
        cost_usd="0.008505",
        cost_source="computed",
        input_cost_usd="0.002585",
        cached_input_cost_usd="0.00025",
        cache_creation_cost_usd="0",
        output_cost_usd="0.00567",
        computed_cost_usd="0.008505",
        price_id=prices["gpt-4o"].pk,
        reservation_id="0b5e8a4c-2f1e-4d3b-9a57-6f1c2d3e4f50",
        tags={"feature": "search", "retry": 0, "beta": True, "score": 0.5},
        latency_ms=850,
        end_user="user-42",
        prompt_hash="abc123",
    )
    assert (row.cost_usd, row.input_cost_usd, row.cached_input_cost_usd, row.cache_creation_cost_usd) == (
        Decimal("0.008505"),
        Decimal("0.002585"),
        Decimal("0.00025"),
        Decimal("0"),
    )
    assert (row.output_cost_usd, row.computed_cost_usd, row.provider_cost_usd) == (
        Decimal("0.00567"),
        Decimal("0.008505"),
        None,
    )
    assert (row.organization.slug, row.project.slug, row.agent.name, row.price_id) == (
        "acme",
        "search",
        "planner",
        prices["gpt-4o"].pk,
    )
    assert row.occurred_at == dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC)
    assert str(row.reservation_id) == "0b5e8a4c-2f1e-4d3b-9a57-6f1c2d3e4f50"
    assert row.tags == {"feature": "search", "retry": 0, "beta": True, "score": 0.5}


@pytest.mark.parametrize(
    ("fields", "costs"),
    [
        pytest.param(
            # uncached 2000 x 3 + cached 6000 x 0.3 + cache write 2000 x 3.75 + output 777 x 15
            {
                "model": "claude-3-5-sonnet-20241022",
                "prompt_tokens": 10000,
                "cached_tokens": 6000,
                "cache_creation_tokens": 2000,
                "completion_tokens": 777,
            },
            {"input": "0.006", "cached": "0.0018", "write": "0.0075", "output": "0.011655", "total": "0.026955"},
            id="cache-read-and-write",
        ),
        pytest.param(
            # no reasoning rate: reasoning tokens cost the output rate; 2222 x 1.1 + 1111 x 0.55 + 4321 x 4.4
            {
                "model": "o3-mini",
                "prompt_tokens": 3333,
                "cached_tokens": 1111,
                "completion_tokens": 4321,
                "reasoning_tokens": 4000,
            },
            {"input": "0.0024442", "cached": "0.00061105", "write": "0", "output": "0.0190124", "total": "0.02206765"},
            id="reasoning-at-output-rate",
        ),
        pytest.param(
            # reasoning rate 20: 500 x 2 + (300 x 8 + 700 x 20)
            {"model": "deep-thinker", "prompt_tokens": 500, "completion_tokens": 1000, "reasoning_tokens": 700},
            {"input": "0.001", "cached": "0", "write": "0", "output": "0.0164", "total": "0.0174"},
            id="reasoning-rate",
        ),
        pytest.param(
            # 3 x 0.123456789 / 1M = 0.000000370370367 -> 12 decimal places
            {"model": "tiny-embed", "operation": "embedding", "prompt_tokens": 3, "completion_tokens": 0},
            {"input": "0.00000037037", "cached": "0", "write": "0", "output": "0", "total": "0.00000037037"},
            id="quantized-to-12-places",
        ),
    ],
)
def test_cost_parts(agent_client, prices, fields, costs):
    response = agent_client.post(URL, usage(**fields), format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert {k: body[k] for k in ("cost_source", "cost_usd", "computed_cost_usd")} == {
        "cost_source": "computed",
        "cost_usd": costs["total"],
        "computed_cost_usd": costs["total"],
    }
    assert [
        body[k] for k in ("input_cost_usd", "cached_input_cost_usd", "cache_creation_cost_usd", "output_cost_usd")
    ] == [
        costs["input"],
        costs["cached"],
        costs["write"],
        costs["output"],
    ]
    assert UsageRecord.objects.get().cost_usd == Decimal(costs["total"])


def test_provider_prefixed_model_uses_the_catalog_price(agent_client, prices):
    response = agent_client.post(
        URL, usage(model="openai/gpt-4o", prompt_tokens=1000, completion_tokens=100), format="json"
    )

    assert response.status_code == 201
    body = response.json()
    # 1000 x 2.5 + 100 x 10 per 1M
    assert (body["model"], body["cost_usd"], body["cost_source"], body["price_id"]) == (
        "openai/gpt-4o",
        "0.0035",
        "computed",
        prices["gpt-4o"].pk,
    )


def test_unpriced_model_records_a_null_cost_never_zero(agent_client, prices):
    response = agent_client.post(URL, usage(model="acme-finetune-v2"), format="json")

    assert response.status_code == 201
    row = UsageRecord.objects.get()
    assert response.json() == expected(row, model="acme-finetune-v2")
    assert (row.cost_usd, row.cost_source, row.price_id) == (None, "unpriced", None)
    assert UsageRecord.objects.unpriced().count() == 1


@pytest.mark.parametrize("sent", ["0.0123", 0.0123])
def test_provider_cost_is_used_when_the_catalog_has_no_price(agent_client, prices, sent):
    response = agent_client.post(URL, usage(model="acme-finetune-v2", provider_cost_usd=sent), format="json")

    assert response.status_code == 201
    row = UsageRecord.objects.get()
    assert response.json() == expected(
        row, model="acme-finetune-v2", cost_usd="0.0123", cost_source="provided", provider_cost_usd="0.0123"
    )
    assert (row.cost_usd, row.provider_cost_usd, row.computed_cost_usd) == (Decimal("0.0123"), Decimal("0.0123"), None)


def test_provider_cost_is_kept_beside_the_computed_cost(agent_client, prices):
    response = agent_client.post(
        URL, usage(prompt_tokens=1000, completion_tokens=100, provider_cost_usd="0.0036"), format="json"
    )

    body = response.json()
    assert (body["cost_source"], body["cost_usd"], body["computed_cost_usd"], body["provider_cost_usd"]) == (
        "computed",
        "0.0035",
        "0.0035",
        "0.0036",
    )
    assert UsageRecord.objects.get().provider_cost_usd == Decimal("0.0036")


def test_old_usage_keeps_the_price_in_effect_when_it_happened(agent_client):
    switch = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    old = make_price("gpt-x", input="5", output="15", effective_to=switch)
    new = make_price("gpt-x", input="2.5", output="10", effective_from=switch)
    records = [
        usage(
            request_id="before",
            model="gpt-x",
            prompt_tokens=1000,
            completion_tokens=100,
            occurred_at="2025-12-31T23:59:59Z",
        ),
        usage(
            request_id="after",
            model="gpt-x",
            prompt_tokens=1000,
            completion_tokens=100,
            occurred_at="2026-01-01T00:00:00Z",
        ),
    ]

    response = agent_client.post(URL, {"records": records}, format="json")

    assert response.status_code == 201
    body = response.json()["records"]
    # 1000 x 5 + 100 x 15 = 0.0065; 1000 x 2.5 + 100 x 10 = 0.0035 (per 1M)
    assert [(r["price_id"], r["cost_usd"]) for r in body] == [(old.pk, "0.0065"), (new.pk, "0.0035")]


def test_batch_flag_and_operation_are_stored(agent_client, prices):
    response = agent_client.post(URL, usage(batch=True, operation="completion", status="error"), format="json")

    row = UsageRecord.objects.get()
    body = response.json()
    assert (body["batch"], body["operation"], body["status"]) == (True, "completion", "error")
    assert (row.is_batch, row.operation, row.status) == (True, "completion", "error")


def test_occurred_at_defaults_to_now_and_offsets_are_normalised(agent_client, prices):
    before = dt.datetime.now(dt.UTC)
    first = agent_client.post(URL, usage(request_id="a", occurred_at=...), format="json").json()
    second = agent_client.post(
        URL, usage(request_id="b", occurred_at="2026-11-02T12:30:00+02:00"), format="json"
    ).json()

    assert before <= dt.datetime.fromisoformat(first["occurred_at"]) <= dt.datetime.now(dt.UTC)
    assert second["occurred_at"] == "2026-11-02T10:30:00Z"
    assert UsageRecord.objects.get(request_id="b").occurred_at == dt.datetime(2026, 11, 2, 10, 30, tzinfo=dt.UTC)


# --- batches and idempotency -------------------------------------------------------------------


def test_batch_answers_every_record_in_input_order(agent_client, prices):
    records = [
        usage(request_id="z-last", model="gpt-4o", prompt_tokens=1000, completion_tokens=0),
        usage(request_id="a-first", model="acme-finetune-v2"),
        usage(request_id="m-middle", model="acme-finetune-v2", provider_cost_usd="0.5"),
    ]

    response = agent_client.post(URL, {"records": records}, format="json")

    assert response.status_code == 201
    rows = {row.request_id: row for row in UsageRecord.objects.all()}

    def summary(request_id, **fields):
        return {
            "id": rows[request_id].pk,
            "request_id": request_id,
            "replayed": False,
            "project": "search",
            "sprint": None,
            "agent": "planner",
            "model": "gpt-4o",
            "cost_usd": None,
            "cost_source": "unpriced",
            "price_id": None,
            **fields,
        }

    # A batch answers summaries; the full row is one GET away.
    assert response.json() == {
        "records": [
            summary("z-last", cost_usd="0.0025", cost_source="computed", price_id=prices["gpt-4o"].pk),
            summary("a-first", model="acme-finetune-v2"),
            summary("m-middle", model="acme-finetune-v2", cost_usd="0.5", cost_source="provided"),
        ]
    }
    full = expected(
        rows["m-middle"],
        request_id="m-middle",
        model="acme-finetune-v2",
        cost_usd="0.5",
        cost_source="provided",
        provider_cost_usd="0.5",
    )
    del full["replayed"]  # only answers to POST say whether the row already existed
    assert agent_client.get(f"{URL}{rows['m-middle'].pk}/").json() == full


def test_replay_returns_the_original_row_once(agent_client, prices):
    first = agent_client.post(URL, usage(), format="json")
    again = agent_client.post(URL, usage(), format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {**first.json(), "replayed": True}
    assert UsageRecord.objects.count() == 1


def test_replay_with_different_content_still_returns_the_original(agent_client, prices):
    first = agent_client.post(URL, usage(prompt_tokens=100), format="json").json()

    again = agent_client.post(URL, usage(prompt_tokens=999999, model="o3-mini"), format="json")

    assert again.status_code == 200
    assert again.json() == {**first, "replayed": True}
    assert list(UsageRecord.objects.values_list("prompt_tokens", "model")) == [(100, "gpt-4o")]


def test_batch_with_replays_answers_201_if_anything_was_new_else_200(agent_client, prices):
    agent_client.post(URL, {"records": [usage(request_id="a"), usage(request_id="b")]}, format="json")

    mixed = agent_client.post(URL, {"records": [usage(request_id="b"), usage(request_id="c")]}, format="json")
    replay = agent_client.post(URL, {"records": [usage(request_id="c"), usage(request_id="a")]}, format="json")

    assert mixed.status_code == 201
    assert [(r["request_id"], r["replayed"]) for r in mixed.json()["records"]] == [("b", True), ("c", False)]
    assert replay.status_code == 200
    assert [(r["request_id"], r["replayed"]) for r in replay.json()["records"]] == [("c", True), ("a", True)]
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["a", "b", "c"]


def test_request_ids_are_unique_per_organization_not_globally(agent_client, prices):
    other_org = OrganizationFactory(slug="globex")
    other_project = ProjectFactory(organization=other_org, slug="search")
    other_client = client_for(organization=other_org, project=other_project, agent=AgentFactory(project=other_project))

    mine = agent_client.post(URL, usage(), format="json")
    theirs = other_client.post(URL, usage(), format="json")

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    assert UsageRecord.objects.count() == 2


# --- attribution ------------------------------------------------------------------------------


def test_sprint_is_resolved_by_the_local_date_in_the_organization_time_zone(project_client, organization, project):
    organization.timezone = "America/Los_Angeles"  # UTC-7 until 1 Nov 2026 09:00Z, then UTC-8
    organization.save()
    first = SprintFactory(project=project, slug="s1", start_date=dt.date(2026, 11, 1), end_date=dt.date(2026, 11, 14))
    SprintFactory(project=project, slug="s2", start_date=dt.date(2026, 11, 15), end_date=dt.date(2026, 11, 28))
    SprintFactory(slug="s1", start_date=dt.date(2026, 1, 1), end_date=dt.date(2026, 12, 31))  # another project's
    records = [
        usage(request_id="late-14th", agent="planner", occurred_at="2026-11-15T07:59:59Z"),  # 14th 23:59:59 local
        usage(request_id="early-15th", agent="planner", occurred_at="2026-11-15T08:00:00Z"),  # 15th 00:00 local
        usage(request_id="tokyo", agent="planner", occurred_at="2026-11-15T16:30:00+09:00"),  # 14th 23:30 local
        usage(request_id="before-any", agent="planner", occurred_at="2026-11-01T06:59:00Z"),  # Oct 31, PDT
        usage(request_id="explicit", agent="planner", sprint="s1", occurred_at="2026-11-20T12:00:00Z"),
    ]

    response = project_client.post(URL, {"records": records}, format="json")

    assert response.status_code == 201, response.json()
    assert [(r["request_id"], r["sprint"]) for r in response.json()["records"]] == [
        ("late-14th", "s1"),
        ("early-15th", "s2"),
        ("tokyo", "s1"),
        ("before-any", None),
        ("explicit", "s1"),
    ]
    assert UsageRecord.objects.get(request_id="explicit").sprint == first


def test_unknown_sprint_is_a_field_error(project_client, project):
    SprintFactory(slug="elsewhere")  # a sprint of another project

    response = project_client.post(URL, usage(agent="planner", sprint="elsewhere"), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"sprint": ["Unknown sprint 'elsewhere' in project 'search'."]}
    assert not UsageRecord.objects.exists()


def test_project_key_registers_unknown_agents(project_client, project, agent, prices):
    records = [
        usage(request_id="1", agent="new-bot"),
        usage(request_id="2", agent="planner"),
        usage(request_id="3", agent="new-bot"),
    ]

    response = project_client.post(URL, {"records": records}, format="json")

    assert response.status_code == 201
    assert [r["agent"] for r in response.json()["records"]] == ["new-bot", "planner", "new-bot"]
    new_bot = Agent.objects.get(project=project, name="new-bot")
    assert new_bot.status == "active"
    assert list(UsageRecord.objects.order_by("request_id").values_list("agent_id", flat=True)) == [
        new_bot.pk,
        agent.pk,
        new_bot.pk,
    ]


def test_organization_key_needs_a_project_and_registers_agents_under_it(org_client, organization, project):
    other = ProjectFactory(organization=organization, slug="support")

    response = org_client.post(
        URL,
        {
            "records": [
                usage(request_id="1", project="support", agent="triage"),
                usage(request_id="2", project="search", agent="planner"),
            ]
        },
        format="json",
    )

    assert response.status_code == 201
    assert [(r["project"], r["agent"]) for r in response.json()["records"]] == [
        ("support", "triage"),
        ("search", "planner"),
    ]
    assert Agent.objects.filter(project=other, name="triage").exists()


def test_organization_key_with_unknown_project_is_a_field_error(org_client):
    response = org_client.post(URL, usage(project="nope", agent="bot"), format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "Some fields are invalid.",
            "fields": {"project": ["Unknown project 'nope' in organization 'acme'."]},
        }
    }
    assert not Agent.objects.filter(name="bot").exists()


@pytest.mark.parametrize(
    ("scope", "fields", "errors"),
    [
        ("organization", {"agent": "bot"}, {"project": ["This field is required for an organization-scoped API key."]}),
        (
            "organization",
            {"project": "search"},
            {"agent": ["This field is required for an organization-scoped API key."]},
        ),
        ("project", {}, {"agent": ["This field is required for a project-scoped API key."]}),
    ],
)
def test_attribution_the_key_cannot_supply_is_required(organization, project, scope, fields, errors):
    client = client_for(organization=organization, project=project if scope == "project" else None)

    response = client.post(URL, usage(**fields), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == errors
    assert not UsageRecord.objects.exists()


def test_agent_key_may_name_its_own_project_and_agent(agent_client, prices):
    response = agent_client.post(URL, usage(project="search", agent="planner"), format="json")

    assert response.status_code == 201
    assert (response.json()["project"], response.json()["agent"]) == ("search", "planner")


# --- scope ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"agent": "someone-else"}, {"agent": ["This API key may only write as agent 'planner'."]}),
        ({"project": "billing"}, {"project": ["This API key may only write to project 'search'."]}),
    ],
)
def test_agent_key_outside_its_scope_is_403(agent_client, organization, fields, errors):
    ProjectFactory(organization=organization, slug="billing")

    response = agent_client.post(URL, usage(**fields), format="json")

    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": "out_of_scope",
            "message": "This API key may not act on that organization, project or agent.",
            "fields": errors,
        }
    }
    assert not UsageRecord.objects.exists()


def test_batch_with_one_foreign_record_writes_nothing(project_client, organization, prices):
    ProjectFactory(organization=organization, slug="billing")
    records = [
        usage(request_id="ok", agent="brand-new"),
        usage(request_id="foreign", agent="planner", project="billing"),
        usage(request_id="bad", agent="planner", prompt_tokens="many"),
    ]

    response = project_client.post(URL, {"records": records}, format="json")

    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": "out_of_scope",
            "message": "Record 1 is outside this API key's scope; nothing was written.",
            "fields": {"records": {"1": {"project": ["This API key may only write to project 'search'."]}}},
        }
    }
    assert not UsageRecord.objects.exists()
    assert not Agent.objects.filter(name="brand-new").exists()


def test_replaying_another_agents_request_id_is_403(organization, project, agent, prices):
    other = AgentFactory(project=project, name="other")
    client_for(organization=organization, project=project, agent=other).post(URL, usage(), format="json")
    mine = client_for(organization=organization, project=project, agent=agent)

    response = mine.post(URL, {"records": [usage(request_id="new"), usage()]}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["fields"] == {
        "records": {"1": {"request_id": ["Already used outside this key's scope."]}}
    }
    assert list(UsageRecord.objects.values_list("request_id", "agent__name")) == [("req-1", "other")]


# --- validation -------------------------------------------------------------------------------

LONG = "x" * 300
TOO_MANY_TAGS = {f"k{i}": i for i in range(51)}


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"request_id": ...}, {"request_id": ["This field is required."]}),
        ({"request_id": None}, {"request_id": ["This field is required."]}),
        ({"request_id": ""}, {"request_id": ["May not be blank."]}),
        ({"request_id": "r" * 129}, {"request_id": ["Ensure this field has no more than 128 characters."]}),
        ({"request_id": 7}, {"request_id": ["Must be a string."]}),
        ({"model": ...}, {"model": ["This field is required."]}),
        ({"model": ""}, {"model": ["May not be blank."]}),
        ({"model": "m" * 256}, {"model": ["Ensure this field has no more than 255 characters."]}),
        ({"provider": "p" * 65}, {"provider": ["Ensure this field has no more than 64 characters."]}),
        ({"prompt_tokens": ...}, {"prompt_tokens": ["This field is required."]}),
        ({"completion_tokens": ...}, {"completion_tokens": ["This field is required."]}),
        ({"prompt_tokens": "100"}, {"prompt_tokens": ["Must be an integer."]}),
        ({"prompt_tokens": 100.0}, {"prompt_tokens": ["Must be an integer."]}),
        ({"prompt_tokens": True}, {"prompt_tokens": ["Must be an integer."]}),
        ({"prompt_tokens": -1}, {"prompt_tokens": ["Must be greater than or equal to 0."]}),
        ({"prompt_tokens": 10**12 + 1}, {"prompt_tokens": ["Must be at most 1000000000000."]}),
        ({"request_id": "a\x00b"}, {"request_id": ["May not contain NUL characters or unpaired surrogates."]}),
        ({"tags": {"k": "v\x00"}}, {"tags": ["Tag 'k': may not contain NUL characters or unpaired surrogates."]}),
        ({"tags": {"k\x00": "v"}}, {"tags": ["Tag keys may not contain NUL characters or unpaired surrogates."]}),
        ({"completion_tokens": -5}, {"completion_tokens": ["Must be greater than or equal to 0."]}),
        ({"cached_tokens": -1}, {"cached_tokens": ["Must be greater than or equal to 0."]}),
        ({"cache_creation_tokens": False}, {"cache_creation_tokens": ["Must be an integer."]}),
        ({"reasoning_tokens": 1.5}, {"reasoning_tokens": ["Must be an integer."]}),
        (
            {"cached_tokens": 101},
            {"cached_tokens": ["May not exceed prompt_tokens (cached tokens are part of the prompt)."]},
        ),
        (
            {"cached_tokens": 60, "cache_creation_tokens": 41},
            {"cache_creation_tokens": ["cached_tokens + cache_creation_tokens may not exceed prompt_tokens."]},
        ),
        (
            {"reasoning_tokens": 11},
            {"reasoning_tokens": ["May not exceed completion_tokens (reasoning tokens are part of the completion)."]},
        ),
        (
            {"occurred_at": "2026-11-02T10:00:00"},
            {"occurred_at": ["Must include a UTC offset, e.g. 'Z' or '+02:00'."]},
        ),
        ({"occurred_at": "2026-11-02"}, {"occurred_at": ["Must include a UTC offset, e.g. 'Z' or '+02:00'."]}),
        (
            {"occurred_at": "yesterday"},
            {"occurred_at": ["Must be an ISO 8601 date-time with a UTC offset, e.g. 2025-01-31T12:00:00Z."]},
        ),
        (
            {"occurred_at": 1700000000},
            {"occurred_at": ["Must be an ISO 8601 date-time with a UTC offset, e.g. 2025-01-31T12:00:00Z."]},
        ),
        ({"operation": "chatty"}, {"operation": [f"Must be one of: {', '.join(Operation.values)}."]}),
        ({"status": "ok"}, {"status": ["Must be one of: success, error."]}),
        ({"status": 1}, {"status": ["Must be one of: success, error."]}),
        ({"latency_ms": -1}, {"latency_ms": ["Must be greater than or equal to 0."]}),
        ({"latency_ms": "fast"}, {"latency_ms": ["Must be an integer."]}),
        ({"latency_ms": 2**31}, {"latency_ms": [f"Must be at most {2**31 - 1}."]}),
        ({"end_user": LONG}, {"end_user": ["Ensure this field has no more than 255 characters."]}),
        ({"prompt_hash": "h" * 129}, {"prompt_hash": ["Ensure this field has no more than 128 characters."]}),
        ({"tags": ["a"]}, {"tags": ["Must be an object of string keys to string, number or boolean values."]}),
        ({"tags": TOO_MANY_TAGS}, {"tags": ["At most 50 tags are allowed."]}),
        ({"tags": {"k" * 65: "v"}}, {"tags": ["Tag keys may have at most 64 characters."]}),
        ({"tags": {"note": "v" * 257}}, {"tags": ["Tag 'note': string values may have at most 256 characters."]}),
        ({"tags": {"nested": {"a": 1}}}, {"tags": ["Tag 'nested': values must be a string, number or boolean."]}),
        ({"tags": {"nothing": None}}, {"tags": ["Tag 'nothing': values must be a string, number or boolean."]}),
        ({"batch": "yes"}, {"batch": ["Must be a boolean."]}),
        ({"provider_cost_usd": "abc"}, {"provider_cost_usd": ['Must be a decimal string, e.g. "0.0025".']}),
        ({"provider_cost_usd": "-0.01"}, {"provider_cost_usd": ["Must be greater than or equal to 0."]}),
        ({"provider_cost_usd": "NaN"}, {"provider_cost_usd": ["Must be a finite number."]}),
        ({"provider_cost_usd": "Infinity"}, {"provider_cost_usd": ["Must be a finite number."]}),
        ({"provider_cost_usd": True}, {"provider_cost_usd": ['Must be a decimal string, e.g. "0.0025".']}),
        ({"provider_cost_usd": "1e12"}, {"provider_cost_usd": ["Must be less than 1000000000000."]}),
        ({"reservation_id": "nope"}, {"reservation_id": ["Must be a UUID."]}),
        ({"reservation_id": 12}, {"reservation_id": ["Must be a UUID."]}),
        ({"project": ""}, {"project": ["May not be blank."]}),
        ({"sprint": 3}, {"sprint": ["Must be a string."]}),
        ({"agent": "a" * 201}, {"agent": ["Ensure this field has no more than 200 characters."]}),
        (
            {"prompt_tokens": ..., "prompt_token": 100},
            {"prompt_token": ["Unknown field."], "prompt_tokens": ["This field is required."]},
        ),
    ],
)
def test_invalid_field_is_a_400_with_field_errors_and_writes_nothing(project_client, prices, fields, errors):
    response = project_client.post(URL, usage(**{"agent": "planner", **fields}), format="json")

    assert response.status_code == 400, response.json()
    assert response.json() == {
        "error": {"code": "validation_error", "message": "Some fields are invalid.", "fields": errors}
    }
    assert not UsageRecord.objects.exists()


def test_unpaired_surrogates_are_refused(project_client):
    body = '{"request_id": "a", "agent": "planner", "model": "gpt-\\ud800", "prompt_tokens": 1, "completion_tokens": 1}'

    response = project_client.generic("POST", URL, body, content_type="application/json")

    # The JSON parser already refuses lone surrogates (they are not valid UTF-8 text).
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    assert "surrogate" in response.json()["error"]["message"]
    assert not UsageRecord.objects.exists()


def test_occurred_at_more_than_five_minutes_ahead_is_refused(agent_client, prices):
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=4)).isoformat()
    late = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)).isoformat()

    ok = agent_client.post(URL, usage(request_id="soon", occurred_at=soon), format="json")
    refused = agent_client.post(URL, usage(request_id="late", occurred_at=late), format="json")

    assert ok.status_code == 201
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"] == {"occurred_at": ["May not be more than 300 seconds in the future."]}
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["soon"]


def test_batch_with_bad_records_is_rejected_whole_with_indexed_errors(project_client, prices):
    records = [
        usage(request_id="a", agent="fresh-agent"),
        usage(request_id="b", agent="planner", prompt_tokens="x"),
        usage(request_id="a", agent="planner"),
        "not an object",
        usage(request_id="e", agent="planner"),
    ]

    response = project_client.post(URL, {"records": records}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "Records 1, 2, 3 are invalid; nothing was written.",
            "fields": {
                "records": {
                    "1": {"prompt_tokens": ["Must be an integer."]},
                    "2": {"request_id": ["Duplicate request_id in this batch (first used by record 0)."]},
                    "3": {"non_field_errors": ["Expected a usage object."]},
                }
            },
        }
    }
    assert not UsageRecord.objects.exists()
    assert not Agent.objects.filter(name="fresh-agent").exists()


def test_unknown_project_in_a_batch_is_indexed_too(org_client, project):
    records = [
        usage(request_id="a", project="search", agent="planner"),
        usage(request_id="b", project="nope", agent="x"),
    ]

    response = org_client.post(URL, {"records": records}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "records": {"1": {"project": ["Unknown project 'nope' in organization 'acme'."]}}
    }
    assert not UsageRecord.objects.exists()


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ([usage()], {"non_field_errors": ['Expected a usage object or {"records": [...]}.']}),
        ("just a string", {"non_field_errors": ['Expected a usage object or {"records": [...]}.']}),
        ({"records": usage()}, {"records": ["Expected a list of usage objects."]}),
        ({"records": []}, {"records": ["At least one record is required."]}),
        ({"records": [usage()], "extra": 1}, {"extra": ["Unknown field."]}),
    ],
)
def test_body_of_the_wrong_shape_is_a_400(agent_client, body, fields):
    response = agent_client.post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "validation_error", "message": "Some fields are invalid.", "fields": fields}
    }
    assert not UsageRecord.objects.exists()


def test_malformed_json_is_a_400(agent_client):
    response = agent_client.generic("POST", URL, '{"request_id": "a",', content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    assert response.json()["error"]["message"].startswith("JSON parse error")


def test_non_finite_json_numbers_are_malformed(agent_client):
    body = '{"request_id": "a", "model": "m", "prompt_tokens": 1, "completion_tokens": 1, "provider_cost_usd": NaN}'

    response = agent_client.generic("POST", URL, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_more_than_1000_records_is_batch_too_large(agent_client):
    records = [usage(request_id=str(i)) for i in range(1001)]

    response = agent_client.post(URL, {"records": records}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "batch_too_large",
            "message": "At most 1000 records per batch; got 1001.",
            "fields": {"records": ["Ensure this list has at most 1000 records."]},
        }
    }
    assert not UsageRecord.objects.exists()


def test_a_batch_of_1000_is_accepted(project_client, prices):
    records = [
        usage(request_id=f"r{i:04}", agent=f"agent-{i % 7}", prompt_tokens=i, cached_tokens=i // 2) for i in range(1000)
    ]

    response = project_client.post(URL, {"records": records}, format="json")

    assert response.status_code == 201
    body = response.json()["records"]
    assert [r["request_id"] for r in body] == [f"r{i:04}" for i in range(1000)]
    assert UsageRecord.objects.count() == 1000
    # gpt-4o: (i - i//2) x 2.5 + (i//2) x 1.25 + 10 x 10, per 1M tokens
    expected_total = sum(
        (Decimal(i - i // 2) * Decimal("2.5") + Decimal(i // 2) * Decimal("1.25") + 100) / 1_000_000
        for i in range(1000)
    )
    assert sum(Decimal(r["cost_usd"]) for r in body) == expected_total
    assert sum(UsageRecord.objects.values_list("cost_usd", flat=True)) == expected_total
    assert Agent.objects.filter(name__startswith="agent-").count() == 7
