"""litellm callback arguments -> usage objects, and the client's configuration (no server needed)."""

import datetime as dt
import hashlib

import pytest

from costs.client.config import ClientConfig
from costs.client.records import usage_from_call

CONFIG = ClientConfig(url="http://spendguard", api_key="sg_x", agent="default-agent", tags={"team": "search"})


def kwargs(**overrides) -> dict:
    base = {
        "litellm_call_id": "call-1",
        "model": "gpt-4o",
        "custom_llm_provider": "openai",
        "call_type": "acompletion",
        "response_cost": 1.35e-05,
        "litellm_params": {"metadata": {}},
    }
    return {**base, **overrides}


def response(**usage) -> dict:
    return {"usage": usage}


START = dt.datetime(2026, 11, 23, 17, 0, 0, tzinfo=dt.UTC)


def test_a_success_with_every_token_kind():
    record = usage_from_call(
        kwargs(litellm_params={"metadata": {"project": "search", "sprint": "s1", "agent": "planner", "tags": ["a"]}}),
        response(
            prompt_tokens=1000,
            completion_tokens=300,
            prompt_tokens_details={"cached_tokens": 200},
            cache_creation_input_tokens=100,
            completion_tokens_details={"reasoning_tokens": 50},
        ),
        START,
        START + dt.timedelta(milliseconds=1234),
        failed=False,
        config=CONFIG,
    )

    assert record == {
        "request_id": "call-1",
        "model": "gpt-4o",
        "provider": "openai",
        "operation": "chat",
        "status": "success",
        "prompt_tokens": 1000,
        "completion_tokens": 300,
        "cached_tokens": 200,
        "cache_creation_tokens": 100,
        "reasoning_tokens": 50,
        "project": "search",
        "sprint": "s1",
        "agent": "planner",
        "tags": {"team": "search", "a": True},
        "occurred_at": "2026-11-23T17:00:00+00:00",
        "latency_ms": 1234,
        "provider_cost_usd": "0.0000135",
    }


def test_a_failure_has_no_tokens_its_own_request_id_and_keeps_the_reservation():
    record = usage_from_call(
        kwargs(
            call_type="embedding",
            response_cost=None,
            user="bob",
            litellm_params={"metadata": {"spendguard_reservation_id": "7c0c7c8e-0000-4000-8000-000000000001"}},
        ),
        None,
        START,
        START,
        failed=True,
        config=CONFIG,
    )

    assert record == {
        "request_id": "call-1:error",
        "model": "gpt-4o",
        "provider": "openai",
        "operation": "embedding",
        "status": "error",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "agent": "default-agent",
        "tags": {"team": "search"},
        "occurred_at": "2026-11-23T17:00:00+00:00",
        "latency_ms": 0,
        "end_user": "bob",
        "reservation_id": "7c0c7c8e-0000-4000-8000-000000000001",
    }


def test_parts_are_clamped_to_their_totals_so_the_server_accepts_the_record():
    record = usage_from_call(
        kwargs(),
        response(
            prompt_tokens=100,
            completion_tokens=10,
            prompt_tokens_details={"cached_tokens": 80},
            cache_creation_input_tokens=50,
            completion_tokens_details={"reasoning_tokens": 99},
        ),
        START,
        START,
        failed=False,
        config=CONFIG,
    )

    assert (record["cached_tokens"], record["cache_creation_tokens"], record["reasoning_tokens"]) == (80, 20, 10)


def test_naive_litellm_times_are_local_time_and_long_call_ids_are_hashed():
    long_id = "x" * 200
    local = dt.datetime(2026, 11, 23, 12, 0, 0)

    record = usage_from_call(kwargs(litellm_call_id=long_id), None, local, None, failed=False, config=CONFIG)

    assert record["request_id"] == hashlib.sha256(long_id.encode()).hexdigest()
    assert dt.datetime.fromisoformat(record["occurred_at"]) == local.astimezone(dt.UTC)
    assert "latency_ms" not in record


def test_unknown_call_types_and_odd_tags():
    record = usage_from_call(
        kwargs(call_type="something_new", litellm_params={"metadata": {"tags": {"n": float("nan"), "o": [1]}}}),
        None,
        None,
        None,
        failed=False,
        config=ClientConfig(url="u", api_key="k"),
    )

    assert record["operation"] == "other"
    assert record["tags"] == {"n": "nan", "o": "[1]"}
    assert "occurred_at" not in record and "agent" not in record


def test_config_from_environment_and_arguments(monkeypatch, tmp_path):
    monkeypatch.setenv("SPENDGUARD_URL", "http://sg.example/")
    monkeypatch.setenv("SPENDGUARD_API_KEY", "sg_env")
    monkeypatch.setenv("SPENDGUARD_ENFORCE", "off")
    monkeypatch.setenv("SPENDGUARD_CHECK_FAILURE", "closed")
    monkeypatch.setenv("SPENDGUARD_AGENT", "triage")
    monkeypatch.setenv("SPENDGUARD_SPOOL_DIR", str(tmp_path))

    from_env = ClientConfig.resolve()
    overridden = ClientConfig.resolve(api_key="sg_arg", enforce=True, agent=None)

    assert (from_env.url, from_env.api_key, from_env.enforce, from_env.check_failure, from_env.agent) == (
        "http://sg.example",
        "sg_env",
        False,
        "closed",
        "triage",
    )
    assert from_env.spool_dir == tmp_path
    assert (overridden.api_key, overridden.enforce, overridden.agent) == ("sg_arg", True, "triage")


@pytest.mark.parametrize(
    ("env", "arguments", "message"),
    [
        ({}, {}, "No Spendguard API key: pass api_key= or set SPENDGUARD_API_KEY."),
        ({"SPENDGUARD_ENFORCE": "maybe"}, {"api_key": "k"}, "SPENDGUARD_ENFORCE must be true or false, not 'maybe'."),
        ({}, {"api_key": "k", "check_failure": "later"}, "check_failure must be 'open' or 'closed', not 'later'."),
        ({}, {"api_key": "k", "batch_size": 0}, "batch_size must be at least 1."),
    ],
)
def test_config_errors(monkeypatch, env, arguments, message):
    monkeypatch.delenv("SPENDGUARD_API_KEY", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    with pytest.raises(ValueError) as error:
        ClientConfig.resolve(**arguments)

    assert str(error.value) == message
