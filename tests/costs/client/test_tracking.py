"""Every litellm call — sync, async, streamed, embedding, failed — lands as exactly one ledger row
with the caller's attribution and the cost litellm computed for it."""

import asyncio
from decimal import Decimal

import litellm
import pytest

from costs.models import UsageRecord
from tests.costs.client.conftest import MESSAGES, mock_response, usd

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    # litellm's own pydantic models warn when first used; not ours to fix.
    pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning"),
]


class CostSpy(litellm.integrations.custom_logger.CustomLogger):
    """What litellm itself handed to callbacks: call id -> response_cost."""

    def __init__(self) -> None:
        super().__init__()
        self.costs: dict[str, float] = {}

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.costs[kwargs["litellm_call_id"]] = kwargs["response_cost"]

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.log_success_event(kwargs, response_obj, start_time, end_time)


@pytest.fixture
def spy():
    spy = CostSpy()
    litellm.callbacks.append(spy)
    return spy


def only_row() -> UsageRecord:
    rows = list(UsageRecord.objects.select_related("project", "sprint", "agent"))
    assert len(rows) == 1, [r.request_id for r in rows]
    return rows[0]


def attribution(row: UsageRecord) -> tuple:
    return (row.organization.slug, row.project.slug, row.sprint.slug if row.sprint else None, row.agent.name)


def test_sync_completion_with_cached_and_reasoning_tokens(make_client, spy):
    client = make_client(enforce=False)

    response = litellm.completion(
        model="o3-mini",
        messages=MESSAGES,
        mock_response=mock_response("o3-mini", prompt=1000, completion=500, cached=400, reasoning=200),
        metadata={"agent": "planner", "tags": {"ticket": "INC-7", "retry": 2}},
        user="customer-42",
    )
    assert client.flush()

    row = only_row()
    cost = spy.costs[row.request_id]
    assert row.request_id == response._hidden_params["litellm_call_id"]
    assert attribution(row) == ("acme", "search", "s-now", "planner")
    assert (row.model, row.provider, row.operation, row.status) == ("o3-mini", "openai", "chat", "success")
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.reasoning_tokens) == (1000, 500, 400, 200)
    assert (row.tags, row.end_user, row.cost_source) == ({"ticket": "INC-7", "retry": 2}, "customer-42", "computed")
    # 600 x 1.1 + 400 x 0.55 + 500 x 4.4 per 1M tokens: litellm's figure, ours, and the one we sent agree.
    assert cost == pytest.approx(0.00308)
    assert row.cost_usd == row.provider_cost_usd == usd(cost)
    assert row.latency_ms is not None and row.reservation_id is None


def test_cache_write_tokens_of_an_anthropic_model(make_client, spy):
    client = make_client(enforce=False)
    answer = mock_response(
        "claude-sonnet-4-5", prompt=3000, completion=100, cache_creation_input_tokens=1000, cache_read_input_tokens=1500
    )

    litellm.completion(
        model="anthropic/claude-sonnet-4-5", messages=MESSAGES, mock_response=answer, metadata={"agent": "writer"}
    )
    assert client.flush()

    row = only_row()
    assert (row.model, row.provider, row.agent.name) == ("claude-sonnet-4-5", "anthropic", "writer")
    assert (row.prompt_tokens, row.cached_tokens, row.cache_creation_tokens) == (3000, 1500, 1000)
    assert row.cost_usd == row.provider_cost_usd == usd(spy.costs[row.request_id])
    assert row.cost_usd > 0


def test_async_completion(make_client, spy):
    client = make_client(enforce=False)

    async def agent() -> bool:
        await litellm.acompletion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response=mock_response("gpt-4o-mini", prompt=1200, completion=300),
            metadata={"project": "search", "sprint": "s-now", "agent": "planner"},
        )
        return await client.aflush()

    assert asyncio.run(agent())

    row = only_row()
    assert attribution(row) == ("acme", "search", "s-now", "planner")
    assert (row.operation, row.prompt_tokens, row.completion_tokens) == ("chat", 1200, 300)
    assert row.cost_usd == usd(spy.costs[row.request_id]) == Decimal("0.000360000000")


def test_streamed_completion_is_one_row_with_the_usage_of_the_whole_stream(make_client, spy):
    client = make_client(enforce=False)

    stream = litellm.completion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response="The database failover took eleven minutes.",
        stream=True,
        metadata={"agent": "planner"},
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert client.flush()

    row = only_row()
    assert text == "The database failover took eleven minutes."
    assert row.completion_tokens > 0 and row.prompt_tokens > 0
    assert row.cost_usd == row.provider_cost_usd == usd(spy.costs[row.request_id])


def test_async_streamed_completion(make_client, spy):
    client = make_client(enforce=False)

    async def agent() -> bool:
        stream = await litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="a b c d", stream=True, metadata={"agent": "planner"}
        )
        async for _ in stream:
            pass
        return await client.aflush()

    assert asyncio.run(agent())

    row = only_row()
    assert row.completion_tokens > 0
    assert row.cost_usd == usd(spy.costs[row.request_id])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_embedding(make_client, spy, mode):
    client = make_client()
    call = {"input": ["incident report", "postmortem"], "mock_response": [0.1, 0.2], "metadata": {"agent": "indexer"}}

    if mode == "sync":
        client.embedding("text-embedding-3-small", **call)
        assert client.flush()
    else:

        async def agent() -> bool:
            await client.aembedding("text-embedding-3-small", **call)
            return await client.aflush()

        assert asyncio.run(agent())

    row = only_row()
    assert (row.model, row.operation, row.agent.name, row.completion_tokens) == (
        "text-embedding-3-small",
        "embedding",
        "indexer",
        0,
    )
    assert row.prompt_tokens > 0
    assert row.cost_usd == row.provider_cost_usd == usd(spy.costs[row.request_id])


def test_failed_call_is_recorded_as_an_error(make_client):
    client = make_client(enforce=False)

    with pytest.raises(litellm.InternalServerError):
        litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response=Exception("provider exploded"),
            metadata={"agent": "planner"},
            litellm_call_id="call-that-failed",
        )
    assert client.flush()

    row = only_row()
    assert (row.request_id, row.status, row.model, row.agent.name) == (
        "call-that-failed:error",
        "error",
        "gpt-4o-mini",
        "planner",
    )
    assert (row.prompt_tokens, row.completion_tokens, row.cost_usd) == (0, 0, Decimal(0))


def test_each_call_is_one_row_even_when_reported_twice(make_client):
    """litellm reports a text_completion to callbacks twice; the ledger still has one row."""
    client = make_client(enforce=False)

    litellm.text_completion(
        model="gpt-3.5-turbo-instruct", prompt="Say hi", mock_response="hi", metadata={"agent": "planner"}
    )
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="ok", metadata={"agent": "planner"})
    assert client.flush()

    assert sorted(UsageRecord.objects.values_list("operation", flat=True)) == ["chat", "completion"]
    assert client.stats["reported"] == 2


def test_sync_flush_after_the_event_loop_of_async_calls_ended(make_client):
    """litellm leaves async callbacks queued on the loop of the call; flush() still delivers them."""
    client = make_client(enforce=False)

    asyncio.run(
        litellm.acompletion(model="gpt-4o-mini", messages=MESSAGES, mock_response="ok", metadata={"agent": "planner"})
    )

    assert client.flush(timeout=5)
    assert only_row().status == "success"


def test_a_call_litellm_refuses_outright_is_recorded_as_an_error(make_client):
    client = make_client(enforce=False)

    with pytest.raises(litellm.BadRequestError):
        client.completion("no-such-provider-model", MESSAGES, metadata={"agent": "planner"})

    assert client.flush(timeout=5)
    assert list(UsageRecord.objects.values_list("status", "model")) == [("error", "no-such-provider-model")]
