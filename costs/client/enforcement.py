"""Budget enforcement before the provider is called: ``POST /api/v1/budget-checks/``.

Why a wrapper and not a litellm hook: in the SDK, exceptions raised by ``log_pre_api_call`` are
logged and swallowed (the call goes on), ``async_pre_call_hook`` only runs inside litellm's proxy,
and ``async_pre_call_deployment_hook`` only exists for async calls. The client's
``completion`` / ``acompletion`` / ``embedding`` / ``aembedding`` run :meth:`Enforcer.admit` first
and then call litellm with the answer, so one code path stops sync and async calls alike and can
switch the model (tests/costs/client/test_enforcement.py proves both, and that the hook does not).

The check's ``request_id`` is the call's ``litellm_call_id`` — the request id the usage is reported
under — and the reservation travels to the callback in the call's metadata, so the usage settles it.
"""

import json
import logging
import uuid
from typing import Any

from costs.client.config import ClientConfig
from costs.client.errors import BudgetExceeded, SpendguardUnavailable
from costs.client.records import RESERVATION_KEY, request_id_of
from costs.client.transport import Transport

logger = logging.getLogger("spendguard.client")

MAX_TOKENS = 10**9  # the check API's bound
FALLBACK_MAX_OUTPUT_TOKENS = 4096


class Enforcer:
    def __init__(self, config: ClientConfig, transport: Transport) -> None:
        self._config = config
        self._transport = transport
        self._warned: set[str] = set()

    def admit(self, kwargs: dict, *, embedding: bool = False) -> dict:
        """Check the call described by litellm ``kwargs``; return the kwargs to call litellm with.

        Always sets ``litellm_call_id`` (kept if the caller set one). With enforcement on: on
        ``allow`` / ``warn`` / ``downgrade``, ``model`` becomes the model the server answered (a
        downgrade or the agent's model override) and the reservation goes into ``metadata``; on a
        refusal raises :class:`BudgetExceeded`; when the check cannot be answered, runs the call
        unchecked (``check_failure="open"``) or raises :class:`SpendguardUnavailable` ("closed").
        """
        kwargs = {**kwargs, "litellm_call_id": str(kwargs.get("litellm_call_id") or uuid.uuid4())}
        if not self._config.enforce:
            return kwargs
        model = kwargs["model"]
        metadata = dict(kwargs.get("metadata") or {})
        body: dict[str, Any] = {
            "model": model,
            "prompt_tokens": min(MAX_TOKENS, _prompt_tokens(model, kwargs, embedding=embedding)),
            "max_output_tokens": min(MAX_TOKENS, self._max_output_tokens(model, kwargs, embedding=embedding)),
            "request_id": request_id_of(kwargs["litellm_call_id"]),
        }
        for field in ("project", "sprint", "agent"):
            value = metadata.get(field) or getattr(self._config, field)
            if value:
                body[field] = str(value)

        answer = self._transport.budget_check(body)
        if answer.status in (200, 201):
            payload = answer.body
            decision, answered_model = payload.get("decision"), payload.get("model") or model
            if decision == "downgrade" or answered_model != model:
                logger.warning("Spendguard: %s -> %s (%s).", model, answered_model, decision)
            for warning in payload.get("warnings") or []:
                if warning not in self._warned:  # once per process: an agent makes many calls
                    self._warned.add(warning)
                    logger.warning("Spendguard budget warning: %s", warning)
            if payload.get("reservation_id"):
                metadata[RESERVATION_KEY] = payload["reservation_id"]
            return {**kwargs, "model": answered_model, "metadata": metadata}
        if answer.status == 429:
            error = answer.body.get("error") or {}
            raise BudgetExceeded(
                error.get("message") or "Spendguard refused this call.",
                code=error.get("code") or "budget_exceeded",
                retry_after=answer.retry_after,
                budgets=error.get("budgets"),
            )
        reason = answer.detail or f"HTTP {answer.status}"
        if self._config.check_failure == "closed":
            raise SpendguardUnavailable(
                f"Spendguard could not check the budget ({reason}); the call was not made (check_failure=closed)."
            )
        logger.warning("Spendguard could not check the budget (%s); the call runs unchecked.", reason)
        return kwargs

    def _max_output_tokens(self, model: str, kwargs: dict, *, embedding: bool) -> int:
        if embedding:
            return 0
        for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
            value = kwargs.get(key)
            if type(value) is int and value >= 0:
                return value
        if self._config.default_max_output_tokens is not None:
            return self._config.default_max_output_tokens
        import litellm

        try:
            return int(litellm.get_model_info(model).get("max_output_tokens") or FALLBACK_MAX_OUTPUT_TOKENS)
        except Exception:  # a model litellm does not know
            return FALLBACK_MAX_OUTPUT_TOKENS


def _prompt_tokens(model: str, kwargs: dict, *, embedding: bool) -> int:
    """An estimate of the input tokens (litellm's tokenizer; ~4 characters a token if it fails)."""
    import litellm

    try:
        if not embedding:
            return int(litellm.token_counter(model=model, messages=kwargs.get("messages") or []))
        items = kwargs.get("input") or []
        items = [items] if isinstance(items, str) else items
        total = 0
        for item in items:
            if isinstance(item, str):
                total += int(litellm.token_counter(model=model, text=item))
            else:  # already tokens
                total += len(item) if isinstance(item, list) else 1
        return total
    except Exception:
        text = json.dumps(kwargs.get("messages") or kwargs.get("input") or "", default=str)
        return len(text) // 4 + 1
