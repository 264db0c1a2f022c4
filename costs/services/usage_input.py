"""Lean validation of the public *usage object* (DESIGN.md, "Usage object").

Hand-written on purpose: a DRF serializer per record costs ~40x more than these checks, and a batch
holds up to 1,000 records. :func:`usage_clean` checks one record and returns the values keyed by
``UsageRecord`` attribute names, plus the attribution the caller asked for (``project_slug``,
``sprint_slug``, ``agent_name``; None when omitted). Errors are ``{field: [message, ...]}``.

Conventions: ``null`` for an optional field means "not given" (the default applies); ``null`` for a
required field is "required". Integers must be JSON integers (``true`` and ``1.0`` are refused).
"""

import math
import uuid
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from costs.models import Operation, UsageStatus
from pricing.calculator import quantize_usd

# Token counts: far above any real request, low enough that no catalog rate can push a cost past
# what the ledger stores (MAX_USD). latency_ms: the PositiveIntegerField bound in PostgreSQL.
MAX_TOKENS = 10**12
MAX_INT = 2**31 - 1
# UsageRecord money columns hold 24 digits with 12 decimals.
MAX_USD = Decimal(10) ** 12
MAX_TAGS = 50
MAX_TAG_KEY = 64
MAX_TAG_STRING = 256

USAGE_FIELDS = frozenset(
    {
        "request_id",
        "project",
        "sprint",
        "agent",
        "model",
        "provider",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cache_creation_tokens",
        "reasoning_tokens",
        "occurred_at",
        "operation",
        "status",
        "latency_ms",
        "end_user",
        "tags",
        "prompt_hash",
        "batch",
        "provider_cost_usd",
        "reservation_id",
    }
)
OPERATIONS = frozenset(Operation.values)
STATUSES = frozenset(UsageStatus.values)
_CHAT, _SUCCESS = Operation.CHAT.value, UsageStatus.SUCCESS.value

REQUIRED = "This field is required."
UNKNOWN = "Unknown field."
NOT_STRING = "Must be a string."
BLANK = "May not be blank."
NOT_INT = "Must be an integer."
NEGATIVE = "Must be greater than or equal to 0."
NOT_BOOL = "Must be a boolean."
BAD_DATETIME = "Must be an ISO 8601 date-time with a UTC offset, e.g. 2025-01-31T12:00:00Z."
NAIVE_DATETIME = "Must include a UTC offset, e.g. 'Z' or '+02:00'."
UNSTORABLE = "May not contain NUL characters or unpaired surrogates."
_OPERATION_CHOICES = f"Must be one of: {', '.join(Operation.values)}."
_STATUS_CHOICES = f"Must be one of: {', '.join(UsageStatus.values)}."


def _too_long(limit: int) -> str:
    return f"Ensure this field has no more than {limit} characters."


def _string(
    raw: dict, key: str, errors: dict, *, max_length: int, required: bool = False, blank: bool = True
) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            errors[key] = [REQUIRED]
        return None
    if type(value) is not str:
        errors[key] = [NOT_STRING]
    elif not value and not blank:
        errors[key] = [BLANK]
    elif len(value) > max_length:
        errors[key] = [_too_long(max_length)]
    elif not _storable(value):
        errors[key] = [UNSTORABLE]
    else:
        return value
    return None


def _storable(text: str) -> bool:
    """PostgreSQL text and jsonb cannot hold NUL, and lone surrogates cannot be encoded as UTF-8."""
    if "\x00" in text:
        return False
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return False
    return True


def _count(raw: dict, key: str, errors: dict, *, required: bool = False, maximum: int = MAX_TOKENS) -> int:
    value = raw.get(key)
    if value is None:
        if required:
            errors[key] = [REQUIRED]
        return 0
    # type() rather than isinstance(): bool is an int subclass and True is not a token count.
    if type(value) is not int:
        errors[key] = [NOT_INT]
    elif value < 0:
        errors[key] = [NEGATIVE]
    elif value > maximum:
        errors[key] = [f"Must be at most {maximum}."]
    else:
        return value
    return 0


def _datetime(value: Any, errors: dict, *, now: datetime, max_future: timedelta) -> datetime | None:
    if type(value) is not str:
        errors["occurred_at"] = [BAD_DATETIME]
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        errors["occurred_at"] = [BAD_DATETIME]
        return None
    if parsed.utcoffset() is None:
        errors["occurred_at"] = [NAIVE_DATETIME]
        return None
    try:
        too_late = parsed > now + max_future
    except OverflowError:
        too_late = True
    if too_late:
        errors["occurred_at"] = [f"May not be more than {int(max_future.total_seconds())} seconds in the future."]
        return None
    return parsed


def _usd(value: Any, errors: dict, key: str) -> Decimal | None:
    # A decimal string is the documented form; a JSON number is accepted because many clients
    # serialise the provider's float as is. repr() of a float is its shortest exact-enough text.
    if type(value) is str:
        text = value.strip()
    elif type(value) is int:
        text = str(value)
    elif type(value) is float:
        text = repr(value)
    else:
        errors[key] = ['Must be a decimal string, e.g. "0.0025".']
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        errors[key] = ['Must be a decimal string, e.g. "0.0025".']
        return None
    if not amount.is_finite():
        errors[key] = ["Must be a finite number."]
        return None
    amount = quantize_usd(amount)  # what the ledger will store; bounds apply to that
    if amount < 0:
        errors[key] = [NEGATIVE]
    elif amount >= MAX_USD:
        errors[key] = [f"Must be less than {MAX_USD:f}."]
    else:
        return amount
    return None


def _tags(value: Any, errors: dict) -> dict:
    if type(value) is not dict:
        errors["tags"] = ["Must be an object of string keys to string, number or boolean values."]
        return {}
    if len(value) > MAX_TAGS:
        errors["tags"] = [f"At most {MAX_TAGS} tags are allowed."]
        return {}
    problems = []
    for key, tag in value.items():
        if type(key) is not str:
            problems.append("Tag keys must be strings.")
            continue
        if len(key) > MAX_TAG_KEY:
            problems.append(f"Tag keys may have at most {MAX_TAG_KEY} characters.")
        if not _storable(key):
            problems.append(f"Tag keys {UNSTORABLE[0].lower()}{UNSTORABLE[1:]}")
            continue
        name = key[:MAX_TAG_KEY]
        kind = type(tag)
        if kind is str:
            if len(tag) > MAX_TAG_STRING:
                problems.append(f"Tag {name!r}: string values may have at most {MAX_TAG_STRING} characters.")
            elif not _storable(tag):
                problems.append(f"Tag {name!r}: {UNSTORABLE[0].lower()}{UNSTORABLE[1:]}")
        elif kind is float:
            if not math.isfinite(tag):
                problems.append(f"Tag {name!r}: numbers must be finite.")
        elif kind is not int and kind is not bool:
            problems.append(f"Tag {name!r}: values must be a string, number or boolean.")
    if problems:
        errors["tags"] = problems
        return {}
    return value


def usage_clean(raw: Any, *, now: datetime, max_future: timedelta) -> tuple[dict | None, dict[str, list[str]]]:
    """Check one usage object. Returns ``(values, errors)``; ``values`` is None when ``errors`` is not
    empty. ``now`` is the default ``occurred_at`` and the reference for the future-skew limit."""
    if type(raw) is not dict:
        return None, {"non_field_errors": ["Expected a usage object."]}
    errors: dict[str, list[str]] = {}
    for key in raw.keys() - USAGE_FIELDS:
        errors[str(key)] = [UNKNOWN]

    request_id = _string(raw, "request_id", errors, max_length=128, required=True, blank=False)
    model = _string(raw, "model", errors, max_length=255, required=True, blank=False)
    provider = _string(raw, "provider", errors, max_length=64)
    project_slug = _string(raw, "project", errors, max_length=100, blank=False)
    sprint_slug = _string(raw, "sprint", errors, max_length=100, blank=False)
    agent_name = _string(raw, "agent", errors, max_length=200, blank=False)
    end_user = _string(raw, "end_user", errors, max_length=255)
    prompt_hash = _string(raw, "prompt_hash", errors, max_length=128)

    prompt = _count(raw, "prompt_tokens", errors, required=True)
    completion = _count(raw, "completion_tokens", errors, required=True)
    cached = _count(raw, "cached_tokens", errors)
    cache_creation = _count(raw, "cache_creation_tokens", errors)
    reasoning = _count(raw, "reasoning_tokens", errors)
    # Parts may not exceed the totals they belong to (DESIGN.md token convention); reported on the part.
    if "prompt_tokens" not in errors:
        if cached > prompt and "cached_tokens" not in errors:
            errors["cached_tokens"] = ["May not exceed prompt_tokens (cached tokens are part of the prompt)."]
        elif cached + cache_creation > prompt and "cache_creation_tokens" not in errors:
            errors["cache_creation_tokens"] = ["cached_tokens + cache_creation_tokens may not exceed prompt_tokens."]
    if reasoning > completion and "completion_tokens" not in errors and "reasoning_tokens" not in errors:
        errors["reasoning_tokens"] = ["May not exceed completion_tokens (reasoning tokens are part of the completion)."]

    latency = raw.get("latency_ms")
    if latency is not None:
        latency = _count(raw, "latency_ms", errors, maximum=MAX_INT)

    occurred = raw.get("occurred_at")
    occurred_at = now if occurred is None else _datetime(occurred, errors, now=now, max_future=max_future)

    operation = raw.get("operation")
    if operation is None:
        operation = _CHAT
    elif operation not in OPERATIONS if type(operation) is str else True:
        errors["operation"] = [_OPERATION_CHOICES]
    status = raw.get("status")
    if status is None:
        status = _SUCCESS
    elif status not in STATUSES if type(status) is str else True:
        errors["status"] = [_STATUS_CHOICES]

    is_batch = raw.get("batch")
    if is_batch is None:
        is_batch = False
    elif type(is_batch) is not bool:
        errors["batch"] = [NOT_BOOL]

    tags = raw.get("tags")
    tags = {} if tags is None else _tags(tags, errors)

    provider_cost = raw.get("provider_cost_usd")
    if provider_cost is not None:
        provider_cost = _usd(provider_cost, errors, "provider_cost_usd")

    reservation_id = raw.get("reservation_id")
    if reservation_id is not None:
        try:
            if type(reservation_id) is not str:
                raise ValueError
            reservation_id = uuid.UUID(reservation_id)
        except ValueError:
            errors["reservation_id"] = ["Must be a UUID."]
            reservation_id = None

    if errors:
        return None, errors
    return {
        "request_id": request_id,
        "project_slug": project_slug,
        "sprint_slug": sprint_slug,
        "agent_name": agent_name,
        "model": model,
        "provider": provider or "",
        "operation": operation,
        "status": status,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "cache_creation_tokens": cache_creation,
        "reasoning_tokens": reasoning,
        "is_batch": is_batch,
        "latency_ms": latency,
        "occurred_at": occurred_at,
        "end_user": end_user or "",
        "tags": tags,
        "prompt_hash": prompt_hash or "",
        "provider_cost_usd": provider_cost,
        "reservation_id": reservation_id,
    }, errors
