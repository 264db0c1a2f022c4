"""The pre-call budget check and its reservation (issue 3, DESIGN.md flow 1) — the hot path.

:func:`budget_check` prices the worst case of a request, finds every budget covering it for the
current periods, and reserves the amount against all of them in one transaction, or against none
(the protocol and why it is exact under concurrency: docs/adr/0003-budget-enforcement-store.md).
:func:`reservation_release` gives an unused reservation back.

Speed: a check is a handful of round trips — the API key (authentication), the agent when named,
the covering budgets joined with their live periods (one query), then one transaction
(``lock_timeout``, one guarded ``UPDATE`` per period, one ``INSERT`` of the reservation and its
holds). Lookups are plain SQL (:mod:`config.db`): compiling ORM queries would cost more than
running them. Catalog prices are cached per process for ``SPENDGUARD_CHECK_PRICE_CACHE_SECONDS``
(a stale price only changes the estimate held, never what is settled). Budgets, periods, agents and
keys are read fresh on every check, so pausing an agent or changing a budget acts on the next check.

Layout: :mod:`.check` holds the services (:func:`budget_check` and the :class:`~.check._Check` it
runs, :func:`reservation_release`), :mod:`.context` what a check reads (attribution, candidate
budgets, the check context cache), :mod:`.pricing` the worst case and the price cache, :mod:`.store`
the SQL (prepared statements, both reservation paths), :mod:`.replay` idempotent replays and
:mod:`.answers` the results, warnings and refusals.
"""

from budgets.services.enforcement.answers import (
    ALLOW,
    DOWNGRADE,
    STORE_UNAVAILABLE,
    UNPRICED_MODEL,
    WARN,
    BudgetLine,
    CheckResult,
    budget_line_payload,
)
from budgets.services.enforcement.check import MAX_AMOUNT_NANOS, budget_check, reservation_release
from budgets.services.enforcement.pricing import check_caches_clear, worst_case_nanos

__all__ = [
    "ALLOW",
    "DOWNGRADE",
    "MAX_AMOUNT_NANOS",
    "STORE_UNAVAILABLE",
    "UNPRICED_MODEL",
    "WARN",
    "BudgetLine",
    "CheckResult",
    "budget_check",
    "budget_line_payload",
    "check_caches_clear",
    "reservation_release",
    "worst_case_nanos",
]
