"""Client settings: keyword arguments win, then ``SPENDGUARD_*`` environment variables, then defaults.

- ``url`` / ``SPENDGUARD_URL``: the Spendguard server (default ``http://127.0.0.1:8000``).
- ``api_key`` / ``SPENDGUARD_API_KEY``: required.
- ``enforce`` / ``SPENDGUARD_ENFORCE``: ``true`` (default) or ``false``.
- ``check_failure`` / ``SPENDGUARD_CHECK_FAILURE``: ``open`` (default) or ``closed``.
- ``project``, ``sprint``, ``agent`` / ``SPENDGUARD_PROJECT``, ``SPENDGUARD_SPRINT``, ``SPENDGUARD_AGENT``:
  attribution for calls whose metadata does not name it (unset: the API key's scope decides).
- ``spool_dir`` / ``SPENDGUARD_SPOOL_DIR``: default ``~/.cache/spendguard/spool``.
- ``spool_max_bytes`` / ``SPENDGUARD_SPOOL_MAX_BYTES``: default 50 MB.

``enforce`` only matters for calls made through the client's wrappers (``Spendguard.completion`` and
friends); plain ``litellm.completion`` calls are tracked, never checked. ``check_failure`` decides
what a wrapped call does when the budget check cannot be answered (server down, timeout, 5xx, a
rejected key): ``open`` runs the call unchecked (logged), ``closed`` raises ``SpendguardUnavailable``.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, not {raw!r}.")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


@dataclass(frozen=True)
class ClientConfig:
    """Everything the client needs; build it with :meth:`resolve`."""

    url: str
    api_key: str
    enforce: bool = True
    check_failure: str = "open"  # "open" | "closed"
    # Attribution used when a call's metadata does not name it (None: the API key's scope decides).
    project: str | None = None
    sprint: str | None = None
    agent: str | None = None
    tags: dict = field(default_factory=dict)
    spool_dir: Path = Path("~/.cache/spendguard/spool")
    spool_max_bytes: int = 50 * 1024 * 1024
    # Reporting: records per POST, seconds a partial batch waits, records held in memory at most.
    batch_size: int = 200
    flush_interval: float = 1.0
    max_queue: int = 10_000
    # Sending: attempts per batch, first backoff and its ceiling (seconds; doubled per attempt, jittered).
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    send_timeout: float = 10.0
    # The budget check sits on the agent's call path: one attempt, short timeout.
    check_timeout: float = 2.0
    # Worst-case output tokens for a check when the call sets no max_tokens (None: the model's limit).
    default_max_output_tokens: int | None = None
    # Seconds the exit flush may take before leaving the rest in the spool.
    exit_timeout: float = 5.0

    @classmethod
    def resolve(cls, **overrides) -> "ClientConfig":
        """Arguments that are not None win over the environment."""
        env = {
            "url": os.environ.get("SPENDGUARD_URL") or "http://127.0.0.1:8000",
            "api_key": os.environ.get("SPENDGUARD_API_KEY", ""),
            "enforce": _env_bool("SPENDGUARD_ENFORCE", True),
            "check_failure": (os.environ.get("SPENDGUARD_CHECK_FAILURE") or "open").strip().lower(),
            "project": os.environ.get("SPENDGUARD_PROJECT") or None,
            "sprint": os.environ.get("SPENDGUARD_SPRINT") or None,
            "agent": os.environ.get("SPENDGUARD_AGENT") or None,
            "spool_dir": os.environ.get("SPENDGUARD_SPOOL_DIR") or "~/.cache/spendguard/spool",
            "spool_max_bytes": _env_int("SPENDGUARD_SPOOL_MAX_BYTES", 50 * 1024 * 1024),
        }
        values = {**env, **{key: value for key, value in overrides.items() if value is not None}}
        values["url"] = values["url"].rstrip("/")
        values["spool_dir"] = Path(values["spool_dir"]).expanduser()
        if not values["api_key"]:
            raise ValueError("No Spendguard API key: pass api_key= or set SPENDGUARD_API_KEY.")
        if values["check_failure"] not in ("open", "closed"):
            raise ValueError(f"check_failure must be 'open' or 'closed', not {values['check_failure']!r}.")
        for name in ("batch_size", "max_queue", "retries"):
            if values.get(name, 1) < 1:
                raise ValueError(f"{name} must be at least 1.")
        return cls(**values)
