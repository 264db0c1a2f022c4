"""Exceptions the client raises into the agent's code (only from the enforcing wrappers)."""


class SpendguardError(Exception):
    """Base of the client's exceptions."""


class BudgetExceeded(SpendguardError):
    """Spendguard refused the call before the provider was called.

    ``code`` is the server's error code (``budget_exceeded``, or ``agent_paused`` when an operator
    paused the agent); ``message`` its reason; ``retry_after`` the seconds until the refusing
    budgets reset (None when one never resets or the agent is paused); ``budgets`` the budgets at
    fault as the server listed them (``id``, ``scope``, ``limit_usd``, ``spent_usd``, ...).
    """

    def __init__(self, message: str, *, code: str, retry_after: int | None = None, budgets: list | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.retry_after = retry_after
        self.budgets = budgets or []

    def __str__(self) -> str:
        when = f" Retry after {self.retry_after} s." if self.retry_after is not None else ""
        return f"{self.message}{when} ({self.code})"


class SpendguardUnavailable(SpendguardError):
    """The budget check could not be answered and the client fails closed (``check_failure="closed"``)."""
