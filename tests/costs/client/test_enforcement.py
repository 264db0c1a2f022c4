"""Budget enforcement before the provider is called, through the client's wrappers."""

import asyncio
import socket

import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger

from budgets.models import Reservation
from costs.client import BudgetExceeded, SpendguardUnavailable
from costs.models import AgentStatus, UsageRecord
from tests.costs.client.conftest import MESSAGES, hard_budget
from tests.costs.client.loopback import free_port

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    # litellm's own pydantic models warn when first used; not ours to fix.
    pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning"),
]

CALL = {"messages": MESSAGES, "max_tokens": 100, "metadata": {"agent": "planner"}}


def call(client, mode: str, model: str = "sgtest/gpt-4o-mini", **overrides):
    kwargs = {**CALL, **overrides}
    if mode == "sync":
        return client.completion(model, **kwargs)

    async def agent():
        try:
            return await client.acompletion(model, **kwargs)
        finally:
            await client.aflush()  # litellm runs async callbacks on this loop: let them run before it ends

    return asyncio.run(agent())


def test_litellm_pre_api_call_hook_cannot_stop_a_call(acme, provider):
    """Why the client enforces with a wrapper: litellm swallows what log_pre_api_call raises."""

    class Refuse(CustomLogger):
        def log_pre_api_call(self, model, messages, kwargs):
            raise RuntimeError("over budget")

    litellm.callbacks.append(Refuse())

    response = litellm.completion(model="sgtest/gpt-4o-mini", messages=MESSAGES)

    assert response.choices[0].message.content == "Done."
    assert provider.models == ["gpt-4o-mini"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_hard_budget_stops_the_next_call_before_the_provider_is_called(make_client, acme, provider, mode):
    client = make_client()
    budget = hard_budget(acme["agent"], "0.01")
    provider.prompt_tokens = 100_000  # $0.015 of gpt-4o-mini: the first call overspends the $0.01

    call(client, mode)
    assert client.flush()
    with pytest.raises(BudgetExceeded) as refused:
        call(client, mode)

    assert provider.models == ["gpt-4o-mini"]  # the second call never reached the provider
    assert client.flush()
    assert UsageRecord.objects.count() == 1
    error = refused.value
    assert error.code == "budget_exceeded"
    assert [b["id"] for b in error.budgets] == [budget.pk]
    assert error.budgets[0]["spent_usd"] == "0.015012"  # 100,000 x 0.15 + 20 x 0.6 per 1M tokens
    assert 0 < error.retry_after <= 31 * 24 * 3600  # until the monthly period ends
    assert str(error).startswith(error.message) and error.message


def test_paused_agent_is_refused_before_the_provider(make_client, acme, provider):
    client = make_client()
    acme["agent"].status = AgentStatus.PAUSED
    acme["agent"].save()

    with pytest.raises(BudgetExceeded) as refused:
        call(client, "sync")

    assert (refused.value.code, refused.value.retry_after, provider.models) == ("agent_paused", None, [])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_downgrade_changes_the_model_that_is_called(make_client, acme, provider, mode):
    client = make_client()
    # 100 output tokens of gpt-4o ($0.001+) do not fit $0.0008; of gpt-4o-mini ($0.00006+) they do.
    hard_budget(acme["agent"], "0.0008", action="downgrade", downgrade_model="sgtest/gpt-4o-mini")

    response = call(client, mode, model="sgtest/gpt-4o")
    assert client.flush()

    assert provider.models == ["gpt-4o-mini"]
    row = UsageRecord.objects.get()
    assert (row.model, row.provider, row.request_id) == (
        "gpt-4o-mini",
        "sgtest",
        response._hidden_params["litellm_call_id"],
    )
    reservation = Reservation.objects.get()
    assert (reservation.model, reservation.status, row.reservation_id) == (
        "sgtest/gpt-4o-mini",
        "settled",
        reservation.pk,
    )


def test_the_usage_settles_the_reservation(make_client, acme, provider):
    client = make_client()
    hard_budget(acme["agent"], "5")

    response = call(client, "sync")
    assert client.flush()

    reservation = Reservation.objects.get()
    row = UsageRecord.objects.get()
    assert (reservation.status, reservation.request_id) == ("settled", row.request_id)
    assert row.reservation_id == reservation.pk
    assert row.request_id == response._hidden_params["litellm_call_id"]


def test_a_failed_call_settles_its_reservation_as_an_error_row(make_client, acme, provider):
    client = make_client()
    hard_budget(acme["agent"], "5")
    provider.fail = True

    with pytest.raises(litellm.ServiceUnavailableError):
        call(client, "sync", litellm_call_id="will-fail")
    assert client.flush()

    row, reservation = UsageRecord.objects.get(), Reservation.objects.get()
    assert (row.request_id, row.status, row.cost_usd) == ("will-fail:error", "error", 0)
    assert (reservation.request_id, reservation.status, row.reservation_id) == ("will-fail", "settled", reservation.pk)


def test_enforcement_off_never_checks(make_client, acme, provider):
    client = make_client(enforce=False)
    hard_budget(acme["agent"], "0.000001")
    provider.prompt_tokens = 100_000

    call(client, "sync")
    call(client, "sync")
    assert client.flush()

    assert provider.models == ["gpt-4o-mini", "gpt-4o-mini"]
    assert Reservation.objects.count() == 0
    assert UsageRecord.objects.count() == 2


def closed_port_url() -> str:
    port = free_port()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    return f"http://127.0.0.1:{port}"


def test_unanswered_check_fails_open_by_default(make_client, provider):
    client = make_client(url=closed_port_url())

    response = call(client, "sync")

    assert response.choices[0].message.content == "Done."
    assert provider.models == ["gpt-4o-mini"]


def test_unanswered_check_fails_closed_when_asked(make_client, provider):
    client = make_client(url=closed_port_url(), check_failure="closed")

    with pytest.raises(SpendguardUnavailable, match=r"could not check the budget \(ConnectError"):
        call(client, "sync")

    assert provider.models == []


def test_rejected_api_key_is_an_unanswered_check(make_client, provider):
    client = make_client(api_key="sg_not-a-key", check_failure="closed")

    with pytest.raises(SpendguardUnavailable, match="invalid_api_key"):
        call(client, "sync")

    assert provider.models == []
