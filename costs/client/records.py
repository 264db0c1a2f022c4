"""litellm's callback arguments -> a Spendguard usage object (DESIGN.md, "Usage object").

Token convention is litellm's (OpenAI's): cached and cache-write tokens are part of
``prompt_tokens``, reasoning tokens part of ``completion_tokens``. Parts are clamped to their
totals, because the server refuses a record whose parts exceed them and a refused record is lost.
"""

import hashlib
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from costs.client.config import ClientConfig

# Metadata key under which the enforcing wrappers pass the reservation to the callback.
RESERVATION_KEY = "spendguard_reservation_id"
# A failed call is recorded under its call id plus this suffix: a retry of the same call id that
# succeeds must still be recorded (the server keeps the first record of a request id).
ERROR_SUFFIX = ":error"

_OPERATIONS = {
    "completion": "chat",
    "acompletion": "chat",
    "text_completion": "completion",
    "atext_completion": "completion",
    "embedding": "embedding",
    "aembedding": "embedding",
    "responses": "responses",
    "aresponses": "responses",
    "image_generation": "image_generation",
    "aimage_generation": "image_generation",
    "transcription": "audio_transcription",
    "atranscription": "audio_transcription",
    "speech": "audio_speech",
    "aspeech": "audio_speech",
    "rerank": "rerank",
    "arerank": "rerank",
    "moderation": "moderation",
    "amoderation": "moderation",
}
_MAX_TAGS, _MAX_TAG_KEY, _MAX_TAG_STRING = 50, 64, 256


def operation_of(call_type: Any) -> str:
    name = getattr(call_type, "value", call_type)
    return _OPERATIONS.get(str(name), "other")


def request_id_of(call_id: str) -> str:
    """A request id the server accepts (at most 128 characters) that is stable for ``call_id``."""
    return call_id if len(call_id) <= 128 else hashlib.sha256(call_id.encode()).hexdigest()


def usage_from_call(
    kwargs: dict, response_obj: Any, start_time: Any, end_time: Any, *, failed: bool, config: ClientConfig
) -> dict:
    """The usage object for one finished litellm call (success or failure)."""
    litellm_params = kwargs.get("litellm_params") or {}
    metadata = litellm_params.get("metadata") or kwargs.get("metadata") or {}
    call_id = str(kwargs.get("litellm_call_id") or uuid.uuid4())
    record: dict[str, Any] = {
        "request_id": request_id_of(call_id + ERROR_SUFFIX if failed else call_id),
        "model": str(kwargs.get("model") or "unknown")[:255],
        "provider": str(kwargs.get("custom_llm_provider") or "")[:64],
        "operation": operation_of(kwargs.get("call_type")),
        "status": "error" if failed else "success",
        **_tokens(None if failed else _usage_of(response_obj)),
    }
    for field in ("project", "sprint", "agent"):
        value = metadata.get(field) or getattr(config, field)
        if value:
            record[field] = str(value)
    tags = {**config.tags, **_tags(metadata.get("tags"))}
    if tags:
        record["tags"] = dict(list(tags.items())[:_MAX_TAGS])
    occurred = _aware(start_time)
    if occurred is not None:
        record["occurred_at"] = occurred.isoformat()
        finished = _aware(end_time)
        if finished is not None and finished >= occurred:
            record["latency_ms"] = min(int((finished - occurred).total_seconds() * 1000), 2**31 - 1)
    user = kwargs.get("user") or litellm_params.get("user")
    if isinstance(user, str) and user:
        record["end_user"] = user[:255]
    cost = _usd(kwargs.get("response_cost"))
    if cost is not None:
        record["provider_cost_usd"] = cost
    reservation = metadata.get(RESERVATION_KEY)
    if reservation:
        record["reservation_id"] = str(reservation)
    return record


def _usage_of(response_obj: Any) -> Any:
    if response_obj is None:
        return None
    if isinstance(response_obj, dict):
        return response_obj.get("usage")
    return getattr(response_obj, "usage", None)


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if type(value) is int and value > 0 else 0


def _tokens(usage: Any) -> dict[str, int]:
    prompt = _int(_get(usage, "prompt_tokens"))
    completion = _int(_get(usage, "completion_tokens"))
    prompt_details = _get(usage, "prompt_tokens_details")
    cached = _int(_get(prompt_details, "cached_tokens")) or _int(_get(usage, "cache_read_input_tokens"))
    writes = _int(_get(usage, "cache_creation_input_tokens")) or _int(_get(prompt_details, "cache_creation_tokens"))
    reasoning = _int(_get(_get(usage, "completion_tokens_details"), "reasoning_tokens"))
    cached = min(cached, prompt)
    tokens = {"prompt_tokens": prompt, "completion_tokens": completion}
    if cached:
        tokens["cached_tokens"] = cached
    if min(writes, prompt - cached):
        tokens["cache_creation_tokens"] = min(writes, prompt - cached)
    if min(reasoning, completion):
        tokens["reasoning_tokens"] = min(reasoning, completion)
    return tokens


def _aware(moment: Any) -> datetime | None:
    """litellm passes local naive datetimes (``datetime.now()``); some paths pass epoch floats."""
    if isinstance(moment, datetime):
        return moment.astimezone(UTC)  # a naive value is taken as local time, which it is
    if isinstance(moment, int | float) and not isinstance(moment, bool):
        return datetime.fromtimestamp(moment, tz=UTC)
    return None


def _usd(value: Any) -> str | None:
    """litellm's float cost as a decimal string (its shortest repr, as the server reads floats)."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        return None
    return format(amount.normalize(), "f") if amount.is_finite() and amount >= 0 else None


def _tags(tags: Any) -> dict:
    """Tags as the server takes them: a dict of strings to strings, numbers or booleans. litellm's
    own convention is a list of strings; each becomes ``{tag: True}``."""
    if isinstance(tags, list | tuple):
        tags = {str(tag): True for tag in tags}
    if not isinstance(tags, dict):
        return {}
    clean = {}
    for key, value in tags.items():
        if isinstance(value, str):
            value = value[:_MAX_TAG_STRING]
        elif not isinstance(value, bool | int | float) or value != value or value in (float("inf"), float("-inf")):
            value = str(value)[:_MAX_TAG_STRING]
        clean[str(key)[:_MAX_TAG_KEY]] = value
    return clean
