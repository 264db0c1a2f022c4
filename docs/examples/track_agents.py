"""Track and guard an agent's LLM calls with Spendguard — runnable against the demo, fully offline.

    make demo                                   # in another terminal: the demo server on :8000
    SPENDGUARD_API_KEY=sg_… .venv/bin/python docs/examples/track_agents.py

Every call uses litellm's ``mock_response``, so no provider is called and no provider key is needed;
litellm still computes usage and cost and runs its callbacks, exactly as for a real call.
``SPENDGUARD_URL`` defaults to http://127.0.0.1:8000 (``make demo PORT=8001``: set it to match).
"""

import asyncio
import contextlib
import os
import sys
from decimal import Decimal

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm's bundled price map: no network

import httpx
import litellm

import costs.client as spendguard
from costs.client import BudgetExceeded, SpendguardCallback

litellm.suppress_debug_info = True
MESSAGES = [{"role": "user", "content": "A customer cannot log in after resetting their password. Triage it."}]
TRIAGE = {"project": "support-bot", "agent": "triage", "tags": {"example": "track_agents"}}


def track() -> None:
    """The two lines: register the callback; every litellm call is then reported with its cost."""
    litellm.callbacks = [SpendguardCallback()]  # configured from SPENDGUARD_URL / SPENDGUARD_API_KEY

    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="Priority P2: auth.", metadata=TRIAGE)
    stream = litellm.completion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="Streamed answer.", stream=True, metadata=TRIAGE
    )
    for _ in stream:  # the usage of a stream is reported once it has been read to the end
        pass

    async def async_agent() -> None:
        await litellm.acompletion(model="gpt-4o", messages=MESSAGES, mock_response="Async answer.", metadata=TRIAGE)

    asyncio.run(async_agent())
    litellm.embedding(
        model="text-embedding-3-small",
        input=["password reset", "login failure"],
        mock_response=[0.1, 0.2],
        metadata={"project": "support-bot", "agent": "kb-embedder"},
    )
    with contextlib.suppress(litellm.InternalServerError):  # failed calls are recorded too, status "error"
        litellm.completion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response=Exception("provider outage"), metadata=TRIAGE
        )


def enforce() -> None:
    """Calls through the client's wrappers are checked first: refused before the provider is
    called, or downgraded. Same arguments and results as litellm's functions."""
    try:  # the demo's "Analyst daily (runaway guard)" budget is exceeded
        spendguard.completion(
            model="gpt-4o",
            messages=MESSAGES,
            mock_response="never returned",
            metadata={"project": "research", "agent": "analyst"},
        )
        print("analyst: allowed (its budget has room today)")
    except BudgetExceeded as refused:
        print(f"analyst: refused before calling the provider: {refused}")

    # "PR reviewer daily (downgrades)" switches to claude-haiku-4-5 when a request does not fit: size
    # one that fits its remaining budget only at haiku's price (a third of sonnet's output price).
    remaining = Decimal(api("/api/v1/budgets/", agent="pr-reviewer")["results"][0]["remaining_usd"])
    max_tokens = max(1, int(remaining / Decimal("0.00001")))  # sonnet: 1.5x the remaining; haiku: 0.5x
    try:
        response = spendguard.completion(
            model="claude-sonnet-4-5",
            messages=MESSAGES,
            max_tokens=max_tokens,
            mock_response="Looks good to me.",
            metadata={"project": "code-review", "agent": "pr-reviewer"},
        )
        print(f"pr-reviewer: asked for claude-sonnet-4-5, ran on {response.model}")
    except BudgetExceeded as refused:
        print(f"pr-reviewer: refused, even after a downgrade: {refused}")


def api(path: str, **params) -> dict:
    url = os.environ.get("SPENDGUARD_URL", "http://127.0.0.1:8000").rstrip("/")
    headers = {"Authorization": f"Bearer {os.environ['SPENDGUARD_API_KEY']}"}
    response = httpx.get(f"{url}{path}", params=params, headers=headers)
    response.raise_for_status()
    return response.json()


def main() -> int:
    if not os.environ.get("SPENDGUARD_API_KEY"):
        print("Set SPENDGUARD_API_KEY to the key `make demo` printed.", file=sys.stderr)
        return 2
    track()
    enforce()
    if not spendguard.flush():  # optional: the client also flushes at exit
        print("Spendguard did not take everything yet; the rest is spooled and sent on the next run.")

    print("\nNewest usage of support-bot in the ledger:")
    for row in api("/api/v1/usage/", project="support-bot", limit=6)["results"]:
        what = f"{row['agent']:12} {row['model']:24} {row['status']:8}"
        print(f"  {row['request_id'][:36]:36}  {what} ${row['cost_usd']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
