"""Spendguard's agent-side client: track every litellm call, and enforce budgets before calling.

Depends only on the standard library, httpx and litellm — never on Django or the server's code.
Tracking is two lines::

    from costs.client import SpendguardCallback
    litellm.callbacks = [SpendguardCallback()]   # SPENDGUARD_URL, SPENDGUARD_API_KEY from the environment

Attribution comes from each call's ``metadata={"project": ..., "sprint": ..., "agent": ..., "tags": {...}}``
(or ``SPENDGUARD_PROJECT`` / ``SPENDGUARD_AGENT``, or the API key's scope). To stop calls that a
hard budget refuses, call through the client instead of litellm — same arguments, same results::

    from costs.client import completion            # or Spendguard(...).completion
    response = completion(model="gpt-4o", messages=[...], metadata={"agent": "triage"})

which raises :class:`BudgetExceeded` before the provider is called when a budget says no, and
calls the cheaper model when a budget downgrades.
"""

from typing import Any

from costs.client.callback import SpendguardCallback
from costs.client.client import Spendguard, configure, default_client
from costs.client.errors import BudgetExceeded, SpendguardError, SpendguardUnavailable

__all__ = [
    "BudgetExceeded",
    "Spendguard",
    "SpendguardCallback",
    "SpendguardError",
    "SpendguardUnavailable",
    "acompletion",
    "aembedding",
    "completion",
    "configure",
    "default_client",
    "embedding",
    "flush",
]


def completion(model: str, messages: list | None = None, **kwargs: Any) -> Any:
    """``litellm.completion`` behind a budget check, through the process-wide client."""
    return default_client().completion(model, messages, **kwargs)


async def acompletion(model: str, messages: list | None = None, **kwargs: Any) -> Any:
    return await default_client().acompletion(model, messages, **kwargs)


def embedding(model: str, input: Any = None, **kwargs: Any) -> Any:
    return default_client().embedding(model, input, **kwargs)


async def aembedding(model: str, input: Any = None, **kwargs: Any) -> Any:
    return await default_client().aembedding(model, input, **kwargs)


def flush(timeout: float = 10.0) -> bool:
    """Send everything the process-wide client holds; see :meth:`Spendguard.flush`."""
    return default_client().flush(timeout)
