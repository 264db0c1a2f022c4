"""HTTP to the Spendguard API: usage batches (with retries and backoff) and the budget check.

Outcomes are values, never exceptions, so the reporting thread cannot die of a network problem:

- ``SENT``: the server recorded the batch (new rows or idempotent replays).
- ``REJECTED``: the server refused the content (400, 403, 413, 422); sending it again cannot help.
- ``UNREACHABLE``: no answer, a timeout, 408 / 429 / 5xx after every retry, or an answer meaning
  the client is misconfigured (401 bad key, 404 wrong URL): keep the records and try later.
"""

import json
import random
import threading
from dataclasses import dataclass

import httpx

USAGE_PATH = "/api/v1/usage/"
CHECK_PATH = "/api/v1/budget-checks/"
USER_AGENT = "spendguard-client/1"

SENT, REJECTED, UNREACHABLE = "sent", "rejected", "unreachable"
_REJECTED_STATUSES = {400, 403, 413, 422}


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: str
    status: int | None = None  # HTTP status, None without an answer
    detail: str = ""  # the server's error message or the network error, for logs


@dataclass(frozen=True, slots=True)
class CheckAnswer:
    """The budget check's HTTP answer (``status`` None: no answer at all)."""

    status: int | None
    body: dict
    retry_after: int | None = None
    detail: str = ""


class Transport:
    def __init__(self, *, url: str, api_key: str, send_timeout: float, check_timeout: float) -> None:
        headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}
        # Two pools: the reporting thread's slow batches must never queue the agent's checks.
        self._usage = httpx.Client(base_url=url, headers=headers, timeout=send_timeout)
        self._checks = httpx.Client(base_url=url, headers=headers, timeout=check_timeout)
        self._closed = threading.Event()

    def send_usage(self, records: list[dict], *, attempts: int, backoff: float, max_backoff: float) -> SendResult:
        """POST ``records`` as one batch, retrying transient failures up to ``attempts`` times in
        all, sleeping ``backoff`` x 2^n seconds (jittered, at most ``max_backoff``) in between."""
        body = json.dumps({"records": records})
        result = SendResult(UNREACHABLE)
        for attempt in range(attempts):
            if attempt:
                delay = min(max_backoff, backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                if self._closed.wait(delay):  # shutting down: stop retrying, the caller keeps the records
                    break
            result = self._post_usage(body)
            if result.outcome != UNREACHABLE or result.status in (401, 404):
                break  # an answer that retrying cannot change
        return result

    def _post_usage(self, body: str) -> SendResult:
        try:
            response = self._usage.post(USAGE_PATH, content=body, headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            return SendResult(UNREACHABLE, detail=f"{type(exc).__name__}: {exc}")
        status = response.status_code
        if status < 300:
            return SendResult(SENT, status)
        detail = _error_message(response)
        if status in _REJECTED_STATUSES:
            return SendResult(REJECTED, status, detail)
        return SendResult(UNREACHABLE, status, detail)

    def budget_check(self, body: dict) -> CheckAnswer:
        try:
            response = self._checks.post(CHECK_PATH, json=body)
        except httpx.HTTPError as exc:
            return CheckAnswer(None, {}, detail=f"{type(exc).__name__}: {exc}")
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        retry_after = response.headers.get("Retry-After")
        return CheckAnswer(
            status=response.status_code,
            body=payload if isinstance(payload, dict) else {},
            retry_after=int(retry_after) if retry_after and retry_after.isdigit() else None,
            detail="" if response.status_code < 300 else _error_message(response),
        )

    def interrupt(self) -> None:
        """Stop retrying: a send in progress makes no further attempt and sleeps no more."""
        self._closed.set()

    def close(self) -> None:
        self._closed.set()
        self._usage.close()
        self._checks.close()


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        text = f"{error.get('code')}: {error.get('message')}"
        if error.get("fields"):
            text += f" {json.dumps(error['fields'])[:500]}"
        return text
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
