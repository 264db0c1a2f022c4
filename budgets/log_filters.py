"""Logging filters (wired in ``LOGGING``, config/settings/base.py)."""

import logging

CHECK_PATH = "/api/v1/budget-checks/"


class SkipBudgetDenials(logging.Filter):
    """Drop Django's "Too Many Requests" warning for a denied budget check: a 429 there is the check
    doing its job (the answer says which budget and when it resets), and a fleet of agents over budget
    would otherwise log one line per call. Other 4xx / 5xx answers, there and elsewhere, still log."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        path = getattr(request, "path", "") or ""
        return not (getattr(record, "status_code", None) == 429 and path.startswith(CHECK_PATH))
