"""Domain errors of the budgets app (mapped to HTTP by ``config.api.exception_handler``).

``code`` values are part of the public API (DESIGN.md, "Public API v1"): never rename one.
"""

from typing import Any

from config.errors import ApplicationError


class BudgetExceeded(ApplicationError):
    """A hard budget (plus grace) would be exceeded: nothing was reserved.

    ``extra`` carries the budgets at fault; ``retry_after`` is whole seconds until they all reset
    (None when one of them never resets, e.g. a ``total`` budget) and becomes the ``Retry-After``
    header of the 429 answer.
    """

    status_code = 429
    code = "budget_exceeded"
    default_message = "A hard budget would be exceeded by this request."

    def __init__(self, message: str | None = None, *, retry_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class AgentPaused(ApplicationError):
    status_code = 429
    code = "agent_paused"
    default_message = "This agent is paused; an operator must resume it."


class BudgetStoreUnavailable(ApplicationError):
    """The live spend store could not be read or locked in time, and the request is covered by a
    hard budget while ``SPENDGUARD_BUDGET_STORE_FAILURE`` is ``closed``."""

    status_code = 503
    code = "budget_store_unavailable"
    default_message = "Budgets cannot be checked right now; the request was not allowed. Retry shortly."


class ReservationClosed(ApplicationError):
    """A check repeated a ``request_id`` whose reservation is no longer held (settled, released or
    expired): the request already ran or was given up, so a new check needs a new request_id."""

    status_code = 409
    code = "reservation_closed"
    default_message = "The reservation for this request_id is no longer held."
